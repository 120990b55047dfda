"""Readers for the face datasets ``meer prepare`` accepts.

* an image folder ``<identity>/<image>`` (the LFW layout), photos not aligned;
* an InsightFace RecordIO training set ``train.rec`` + ``train.idx`` (MXNet's binary
  record format, read here with :mod:`struct`; no mxnet needed), already aligned 112x112;
* an InsightFace verification ``.bin`` (a pickle of ``(bins, issame_list)``), already aligned,
  read with a restricted unpickler because a pickle can run arbitrary code.

Every reader is a :class:`Source`: a list of source-relative ``keys``, the identity of each,
and ``read(i) -> bytes`` (the encoded image), so the preparation pipeline treats all three alike.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})

# MXNet / dmlc RecordIO: every record starts with this magic word and a length word whose
# top 3 bits say whether the record was split (it is, wherever the payload contains the magic).
RECORDIO_MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", RECORDIO_MAGIC)
# mxnet.recordio.IRHeader: flag (number of extra float labels), label, id, id2.
_IR_HEADER = struct.Struct("<IfQQ")


@dataclass
class Source:
    """A dataset as a list of encoded images.

    kind:       "folder", "recordio" or "bin"
    root:       the path the source was opened from
    keys:       [N] source-relative path of each image (``Name/Name_0001.jpg``, ``train.rec:17``)
    identities: [N] identity name of each image
    aligned:    True when the images are already aligned crops (no detection needed)
    issame:     bool [P] for a verification ``.bin``: image ``2p`` and ``2p+1`` form pair ``p``
    """

    kind: str
    root: Path
    keys: list[str]
    identities: list[str]
    aligned: bool
    issame: np.ndarray | None = None
    _reader: Any = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.keys)

    def read(self, index: int) -> bytes:
        """The encoded bytes of image ``index`` (raises ``OSError`` when unreadable)."""
        return self._reader(index)


# --------------------------------------------------------------------------- image folder


def read_image_folder(root: str | os.PathLike) -> Source:
    """Every file in ``root/<identity>/`` (sorted), identity = sub-folder name.

    Files whose extension is not an image are kept as items so that preparation reports them
    as failures instead of silently dropping them; hidden files (``.DS_Store``) are ignored.
    Files directly in ``root`` (such as LFW's ``pairs.txt``) are not items.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"no such folder: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    keys: list[str] = []
    identities: list[str] = []
    for person in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for file in sorted(f for f in person.iterdir() if f.is_file() and not f.name.startswith(".")):
            keys.append(f"{person.name}/{file.name}")
            identities.append(person.name)
    if not keys:
        raise ValueError(
            f"no images found in {root}: expected an image folder laid out as <identity>/<image>"
        )

    def read(index: int) -> bytes:
        return (root / keys[index]).read_bytes()

    return Source("folder", root, keys, identities, aligned=False, _reader=read)


# --------------------------------------------------------------------------- RecordIO


@dataclass(frozen=True)
class IRHeader:
    """The header InsightFace puts in front of each record. ``label`` is a float, or float32
    [flag] when ``flag > 0`` (InsightFace's record 0 stores the identity index range there)."""

    flag: int
    label: float | np.ndarray
    id: int
    id2: int


def unpack_record(payload: bytes) -> tuple[IRHeader, bytes]:
    """Split a record payload into its :class:`IRHeader` and the image bytes after it."""
    if len(payload) < _IR_HEADER.size:
        raise ValueError(f"record too short for an IRHeader ({len(payload)} bytes)")
    flag, label, id1, id2 = _IR_HEADER.unpack_from(payload)
    offset = _IR_HEADER.size
    if flag > 0:
        end = offset + 4 * flag
        if len(payload) < end:
            raise ValueError(f"record too short for {flag} labels")
        label = np.frombuffer(payload[offset:end], dtype="<f4").copy()
        offset = end
    return IRHeader(flag, label, id1, id2), payload[offset:]


def read_record_at(handle: io.BufferedIOBase, offset: int) -> bytes:
    """The payload of the record starting at byte ``offset``, re-joining split records."""
    handle.seek(offset)
    parts: list[bytes] = []
    while True:
        head = handle.read(8)
        if len(head) < 8:
            raise ValueError(f"truncated RecordIO file at byte {handle.tell()}")
        magic, lrecord = struct.unpack("<II", head)
        if magic != RECORDIO_MAGIC:
            raise ValueError(f"bad RecordIO magic {magic:#x} at byte {handle.tell() - 8}")
        cflag, length = lrecord >> 29, lrecord & ((1 << 29) - 1)
        data = handle.read(length)
        if len(data) < length:
            raise ValueError("truncated RecordIO record")
        handle.seek((-length) % 4, io.SEEK_CUR)  # payloads are padded to 4 bytes
        parts.append(data)
        # cflag 0: whole record; 1: first part, 2: middle, 3: last. The writer cut the payload
        # at each occurrence of the magic word, so the parts are joined with it.
        if cflag in (0, 3):
            return _MAGIC_BYTES.join(parts)
        if cflag not in (1, 2):
            raise ValueError(f"bad RecordIO continuation flag {cflag}")


def read_recordio_index(idx_path: str | os.PathLike) -> dict[int, int]:
    """``train.idx``: lines ``<record index>\\t<byte offset>``."""
    index: dict[int, int] = {}
    for number, line in enumerate(Path(idx_path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            key, offset = line.split()
            index[int(key)] = int(offset)
        except ValueError:
            raise ValueError(f"{idx_path}:{number}: expected '<index> <offset>', got {line!r}") from None
    return index


def read_recordio(rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None) -> Source:
    """An InsightFace ``train.rec`` (+ ``train.idx``): aligned face JPEGs with integer labels.

    InsightFace marks its files with a header record 0 whose ``label[0]`` is one past the last
    image record; the images are then records ``1 .. label[0]-1``. Files without that header
    hold images in every record. Identity names are the label numbers.
    """
    rec_path = Path(rec_path)
    idx_path = Path(idx_path) if idx_path else rec_path.with_suffix(".idx")
    for path in (rec_path, idx_path):
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
    offsets = read_recordio_index(idx_path)
    if not offsets:
        raise ValueError(f"empty RecordIO index: {idx_path}")
    with open(rec_path, "rb") as handle:
        first, _ = unpack_record(read_record_at(handle, offsets[min(offsets)]))
        if first.flag > 0 and min(offsets) == 0:
            records = [r for r in range(1, int(first.label[0])) if r in offsets]
        else:
            records = sorted(offsets)
        identities = []
        for record in records:
            header, _ = unpack_record(read_record_at(handle, offsets[record]))
            label = header.label[0] if header.flag > 0 else header.label
            identities.append(str(int(label)))
    keys = [f"{rec_path.name}:{r}" for r in records]

    def read(index: int) -> bytes:
        with open(rec_path, "rb") as handle:
            return unpack_record(read_record_at(handle, offsets[records[index]]))[1]

    return Source("recordio", rec_path, keys, identities, aligned=True, _reader=read)


# --------------------------------------------------------------------------- restricted pickle


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for something :class:`RestrictedUnpickler` does not allow."""


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # Python 3 pickles numpy's raw buffer as codecs.encode(text, "latin1"); no other codec.
    if encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"codec {encoding!r} is not allowed")
    return text.encode("latin1")


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only plain data: containers, bytes, numbers, bools, and (when
    ``numpy_dtypes`` is given) numpy arrays / scalars of those dtypes. Any other global a pickle
    names — the way a malicious pickle runs code — raises :class:`UnsafePickleError`.
    """

    def __init__(self, file: io.BufferedIOBase, numpy_dtypes: frozenset[str] = frozenset()) -> None:
        # "bytes": Python 2 pickles of str (InsightFace's .bin files) come back as bytes.
        super().__init__(file, encoding="bytes")
        self.numpy_dtypes = numpy_dtypes

    def _dtype(self, name: Any, align: bool = False, copy: bool = True) -> np.dtype:
        if isinstance(name, bytes):
            name = name.decode("ascii")
        if not isinstance(name, str) or np.dtype(name).str.lstrip("<>|=") not in self.numpy_dtypes:
            raise UnsafePickleError(f"numpy dtype {name!r} is not allowed")
        return np.dtype(name)

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in ("list", "tuple", "bytes", "bool", "dict"):
            return {"list": list, "tuple": tuple, "bytes": bytes, "bool": bool, "dict": dict}[name]
        if module == "collections" and name == "OrderedDict":
            return dict
        if self.numpy_dtypes:
            if module == "_codecs" and name == "encode":
                return _latin1_encode
            if module in ("numpy.core.multiarray", "numpy._core.multiarray"):
                if name == "_reconstruct":
                    return _reconstruct
                if name == "scalar":
                    return _scalar
            if module == "numpy" and name == "ndarray":
                return np.ndarray
            if module == "numpy" and name == "dtype":
                return self._dtype
        raise UnsafePickleError(f"refusing to load {module}.{name} from a pickle")


def _reconstruct(cls: type, shape: tuple, dtype: bytes) -> np.ndarray:
    # numpy's own _reconstruct makes an empty array that __setstate__ then fills; only ndarray.
    if cls is not np.ndarray:
        raise UnsafePickleError("only numpy.ndarray may be reconstructed")
    return np.ndarray.__new__(np.ndarray, shape, np.uint8)


def _scalar(dtype: np.dtype, data: bytes) -> Any:
    if not isinstance(dtype, np.dtype) or not isinstance(data, bytes):
        raise UnsafePickleError("bad numpy scalar in pickle")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def restricted_loads(data: bytes, numpy_dtypes: frozenset[str] = frozenset()) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`."""
    return RestrictedUnpickler(io.BytesIO(data), numpy_dtypes).load()


# --------------------------------------------------------------------------- verification .bin


def read_verification_bin(path: str | os.PathLike) -> Source:
    """An InsightFace verification set (``lfw.bin``, ``agedb_30.bin`` ...): ``2P`` aligned face
    JPEGs and ``issame`` bool [P]; pair ``p`` is images ``2p`` and ``2p+1``.

    Identities are unknown in this format, so every image gets the identity ``"unknown"``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        loaded = restricted_loads(path.read_bytes(), numpy_dtypes=frozenset({"b1"}))
    except UnsafePickleError as err:
        raise ValueError(f"{path} is not a safe verification .bin: {err}") from None
    except Exception as err:  # truncated or not a pickle at all
        raise ValueError(f"{path} is not a verification .bin ({type(err).__name__}: {err})") from None
    if not (isinstance(loaded, tuple | list) and len(loaded) == 2):
        raise ValueError(f"{path}: expected a pickle of (bins, issame_list)")
    bins, issame = loaded
    issame = np.asarray([bool(s) for s in issame], dtype=bool)
    if not all(isinstance(b, bytes | bytearray | np.ndarray) for b in bins):
        raise ValueError(f"{path}: image entries must be bytes")
    bins = [bytes(b) for b in bins]
    if len(bins) != 2 * len(issame):
        raise ValueError(f"{path}: {len(bins)} images for {len(issame)} pairs (expected 2 per pair)")
    keys = [f"{path.name}:{i}" for i in range(len(bins))]
    return Source(
        "bin", path, keys, ["unknown"] * len(bins), aligned=True, issame=issame,
        _reader=bins.__getitem__,
    )


# --------------------------------------------------------------------------- dispatch


def open_source(path: str | os.PathLike) -> Source:
    """Open whichever of the three formats ``path`` is.

    A folder holding ``train.rec`` + ``train.idx`` or a ``.rec`` file: RecordIO. A ``.bin`` file:
    verification set. Any other folder: an image folder. Raises ``FileNotFoundError`` for a
    missing path and ``ValueError`` for a format it does not know.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    if path.is_dir():
        if (path / "train.rec").is_file():
            return read_recordio(path / "train.rec")
        if any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir()) and not any(
            p.is_dir() for p in path.iterdir()
        ):
            raise ValueError(
                f"{path} holds images but no identity sub-folders: expected <identity>/<image>"
            )
        return read_image_folder(path)
    if path.suffix == ".rec":
        return read_recordio(path)
    if path.suffix == ".bin":
        return read_verification_bin(path)
    raise ValueError(
        f"unknown dataset format: {path} (expected an image folder, train.rec + train.idx, "
        "or a verification .bin)"
    )
