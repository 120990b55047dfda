import os
import pickle

import cv2
import numpy as np
import pytest

from meer.data.formats import (
    UnsafePickleError,
    open_source,
    read_recordio,
    read_verification_bin,
    restricted_loads,
    unpack_record,
)
from tests.unit.facefiles import jpeg, write_insightface_rec


def test_recordio_roundtrip(tmp_path):
    labels = [0, 0, 1, 2, 2, 2]
    images = write_insightface_rec(tmp_path, labels, magic_in=3)
    source = open_source(tmp_path)
    assert source.kind == "recordio" and source.aligned
    assert source.identities == ["0", "0", "1", "2", "2", "2"]
    assert source.keys[0] == "train.rec:1"
    for i, record in enumerate(images):
        assert source.read(i) == unpack_record(record)[1]
    decoded = cv2.imdecode(np.frombuffer(source.read(1), np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (112, 112, 3)


def test_recordio_without_header_and_with_label_arrays(tmp_path):
    write_insightface_rec(tmp_path, [(5, 0), (7, 0)], with_header=False)
    source = read_recordio(tmp_path / "train.rec")
    assert source.identities == ["5", "7"]


def test_recordio_bad_magic(tmp_path):
    write_insightface_rec(tmp_path, [0])
    data = bytearray((tmp_path / "train.rec").read_bytes())
    data[0] ^= 0xFF
    (tmp_path / "train.rec").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="magic"):
        read_recordio(tmp_path / "train.rec")


@pytest.mark.parametrize("numpy_issame", [False, True])
def test_verification_bin(tmp_path, numpy_issame):
    bins = [jpeg(v) for v in range(4)]
    issame = [True, False]
    payload = (bins, np.array(issame) if numpy_issame else issame)
    (tmp_path / "lfw.bin").write_bytes(pickle.dumps(payload, protocol=2))
    source = read_verification_bin(tmp_path / "lfw.bin")
    assert source.kind == "bin" and len(source) == 4
    assert source.read(2) == bins[2]
    np.testing.assert_array_equal(source.issame, issame)


class Exploit:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_bin_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "evil.bin").write_bytes(pickle.dumps(([b"x", Exploit(marker)], [True])))
    with pytest.raises(ValueError, match="refusing to load"):
        read_verification_bin(tmp_path / "evil.bin")
    assert not marker.exists()


def test_restricted_unpickler_refuses_object_arrays_and_codecs():
    evil_array = pickle.dumps(np.array([Exploit("/nonexistent/x")], dtype=object))
    with pytest.raises(UnsafePickleError):
        restricted_loads(evil_array, numpy_dtypes=frozenset({"b1"}))
    with pytest.raises(UnsafePickleError):
        restricted_loads(pickle.dumps(np.zeros(3)), numpy_dtypes=frozenset({"b1"}))
    np.testing.assert_array_equal(
        restricted_loads(pickle.dumps(np.ones(3, bool)), numpy_dtypes=frozenset({"b1"})), [True] * 3
    )
    assert restricted_loads(pickle.dumps(([b"a"], (True, 1)))) == ([b"a"], (True, 1))


def test_bin_garbage_is_a_clear_error(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="not a verification .bin"):
        read_verification_bin(tmp_path / "x.bin")


def test_image_folder_and_bad_sources(tmp_path):
    (tmp_path / "ds" / "B").mkdir(parents=True)
    (tmp_path / "ds" / "A").mkdir()
    (tmp_path / "ds" / "A" / "a1.jpg").write_bytes(jpeg(1))
    (tmp_path / "ds" / "A" / ".DS_Store").write_bytes(b"")
    (tmp_path / "ds" / "B" / "b1.png").write_bytes(jpeg(2))
    (tmp_path / "ds" / "pairs.txt").write_text("1 1\n")
    source = open_source(tmp_path / "ds")
    assert source.keys == ["A/a1.jpg", "B/b1.png"] and source.identities == ["A", "B"]

    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        open_source(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        open_source(tmp_path / "missing")
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="unknown dataset format"):
        open_source(tmp_path / "data.csv")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "x.jpg").write_bytes(jpeg(3))
    with pytest.raises(ValueError, match="identity sub-folders"):
        open_source(tmp_path / "flat")
