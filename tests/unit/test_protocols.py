import numpy as np
import pytest

from meer.data.protocols import masked_folder_protocol, read_lfw_pairs


def test_lfw_pairs_view2(tmp_path):
    lines = ["2\t2"]
    for fold in range(2):
        lines += [f"Ann_{fold}\t1\t2", f"Bob_{fold}\t3\t12"]
        lines += [f"Ann_{fold}\t1\tBob_{fold}\t4", f"Cy_{fold}\t2\tDee_{fold}\t101"]
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    pairs = read_lfw_pairs(tmp_path / "pairs.txt")
    assert len(pairs) == 8 and pairs.num_folds == 2
    assert pairs.first[1] == "Bob_0/Bob_0_0003.jpg" and pairs.second[1] == "Bob_0/Bob_0_0012.jpg"
    assert pairs.first[3] == "Cy_0/Cy_0_0002.jpg" and pairs.second[3] == "Dee_0/Dee_0_0101.jpg"
    np.testing.assert_array_equal(pairs.same, [True, True, False, False] * 2)
    np.testing.assert_array_equal(pairs.fold, [0, 0, 0, 0, 1, 1, 1, 1])
    assert pairs.people([1]) == {"Ann_1", "Bob_1", "Cy_1", "Dee_1"}
    assert pairs.people([0, 1]) == pairs.people([0]) | pairs.people([1]) and pairs.people([]) == set()


def test_lfw_pairs_view1_header(tmp_path):
    (tmp_path / "dev.txt").write_text("1\nAnn 1 2\nAnn 1 Bob 1\n")
    pairs = read_lfw_pairs(tmp_path / "dev.txt")
    assert pairs.num_folds == 1 and list(pairs.same) == [True, False]


@pytest.mark.parametrize(
    "text,match",
    [
        ("1 1\nAnn 1 2\n", "found 1"),
        ("1 1\nAnn 1 2 3\nAnn 1 Bob 2\n", ":2: expected 'Name i j'"),
        ("1 1\nAnn 1 2\nAnn x Bob 2\n", ":3: expected 'Name1 i Name2 j'"),
        ("ten three\n", "header"),
    ],
)
def test_lfw_pairs_errors_name_the_line(tmp_path, text, match):
    (tmp_path / "pairs.txt").write_text(text)
    with pytest.raises(ValueError, match=match):
        read_lfw_pairs(tmp_path / "pairs.txt")


def test_masked_folder_protocol(tmp_path):
    files = {
        "ann": ["masked_1.jpg", "masked_2.png", "unmasked_1.jpg", "unmasked_2.jpg", "readme.txt"],
        "bob": ["unmasked_1.jpg"],
        "cy": ["masked_1.jpg"],  # no gallery image: cannot be identified
    }
    for person, names in files.items():
        (tmp_path / person).mkdir()
        for name in names:
            (tmp_path / person / name).write_bytes(b"")
    protocol = masked_folder_protocol(tmp_path)
    assert protocol.names == ["ann", "bob"]
    assert protocol.probes == ["ann/masked_1.jpg", "ann/masked_2.png"]
    assert list(protocol.probe_labels) == [0, 0]
    assert protocol.gallery == ["ann/unmasked_1.jpg", "ann/unmasked_2.jpg", "bob/unmasked_1.jpg"]
    assert list(protocol.gallery_labels) == [0, 0, 1]
    assert protocol.unmatched == ["cy/masked_1.jpg"]


@pytest.mark.data
def test_real_protocol_files(shared_data):
    pairs = read_lfw_pairs(shared_data / "lfw" / "pairs.txt")
    assert len(pairs) == 6000 and pairs.num_folds == 10 and pairs.same.sum() == 3000
    assert all((shared_data / "lfw" / p).is_file() for p in pairs.first[:50] + pairs.second[-50:])
    if (shared_data / "rmfrd-dev").is_dir():
        protocol = masked_folder_protocol(shared_data / "rmfrd-dev")
        assert len(protocol.names) == 55 and len(protocol.gallery) == 275
