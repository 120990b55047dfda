"""Writers for the small InsightFace-format files the data tests read (the real files are GBs)."""

import struct

import cv2
import numpy as np

from meer.data.formats import RECORDIO_MAGIC

MAGIC = struct.pack("<I", RECORDIO_MAGIC)


def jpeg(value: int, size: int = 112) -> bytes:
    image = np.full((size, size, 3), value, np.uint8)
    image[: size // 2] = 255 - value
    return cv2.imencode(".jpg", image)[1].tobytes()


def write_record(handle, payload: bytes) -> int:
    """dmlc RecordIO writer: payload split wherever the magic word sits at a 4-byte boundary."""
    offset = handle.tell()
    cuts = [i for i in range(0, len(payload) - 3, 4) if payload[i : i + 4] == MAGIC]
    starts = [0] + [c + 4 for c in cuts]
    ends = cuts + [len(payload)]
    for n, (a, b) in enumerate(zip(starts, ends)):
        cflag = 0 if len(starts) == 1 else 1 if n == 0 else 3 if n == len(starts) - 1 else 2
        part = payload[a:b]
        handle.write(struct.pack("<II", RECORDIO_MAGIC, (cflag << 29) | len(part)))
        handle.write(part + b"\0" * ((-len(part)) % 4))
    return offset


def ir_header(label, id1=0) -> bytes:
    if isinstance(label, tuple | list):
        return struct.pack("<IfQQ", len(label), 0.0, id1, 0) + np.asarray(label, "<f4").tobytes()
    return struct.pack("<IfQQ", 0, float(label), id1, 0)


def write_insightface_rec(folder, labels, with_header=True, magic_in=None):
    """train.rec/.idx like InsightFace's: record 0 = (first identity record, end), images, identities."""
    images = [ir_header(label, i) + jpeg(20 * i % 250) for i, label in enumerate(labels)]
    if magic_in is not None:
        # make one payload contain the magic word at a 4-byte boundary to force a split record
        payload = bytearray(images[magic_in])
        payload[24:28] = MAGIC  # inside the JPEG bytes right after the header
        images[magic_in] = bytes(payload)
    records = ([ir_header((len(labels) + 1, len(labels) + 1))] if with_header else []) + images
    offsets = []
    with open(folder / "train.rec", "wb") as handle:
        for record in records:
            offsets.append(write_record(handle, record))
    first = 0 if with_header else 1
    (folder / "train.idx").write_text("".join(f"{first + i}\t{o}\n" for i, o in enumerate(offsets)))
    return images
