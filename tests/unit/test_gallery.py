"""The gallery database (`meer.gallery`): enrol / list / rename / delete, open-set search, the
identification threshold, and the ways a gallery can be misused or damaged."""

import sqlite3
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from meer.calibration import (
    Calibration,
    calibrate_identification,
    read_calibration,
    write_calibration,
    write_identification_calibration,
)
from meer.gallery import (
    DuplicateNameError,
    GalleryError,
    GalleryStore,
    ModelMismatchError,
    UnknownPersonError,
    _Index,
    faiss_available,
)

DIM = 16


def unit(rng, n, dim=DIM):
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def store(tmp_path):
    with GalleryStore(tmp_path / "people.db", "model-a", DIM) as gallery:
        yield gallery


def template_rows(path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT COUNT(*) FROM templates").fetchone()[0]


def test_enrol_list_rename_delete(store):
    rng = np.random.default_rng(0)
    ann = store.enroll("ann", unit(rng, 3), masked=[False, True, False], sources=["a.jpg", "b.jpg", "c.jpg"])
    assert (ann.name, ann.templates, ann.masked) == ("ann", 3, 1)
    store.enroll("bob", unit(rng, 1))
    store.enroll("ann", unit(rng, 1), masked=[True], add=True)
    assert [(p.name, p.templates, p.masked) for p in store.people()] == [("ann", 4, 2), ("bob", 1, 0)]
    store.rename("bob", "Bob Lee")
    assert "Bob Lee" in store and "bob" not in store
    assert store.delete("ann") == 4
    assert [p.name for p in store.people()] == ["Bob Lee"]
    assert template_rows(store.path) == 1  # deletion leaves no biometric data behind


def test_a_deleted_person_leaves_no_template_bytes_in_the_files(store):
    rng = np.random.default_rng(8)
    secret = unit(rng, 3)
    store.enroll("ann", secret)
    store.enroll("bob", unit(rng, 2))
    store.delete("ann")
    files = [store.path, store.path.with_name(store.path.name + "-wal")]
    data = b"".join(f.read_bytes() for f in files if f.exists())
    assert not any(row.tobytes() in data for row in secret)
    assert [p.name for p in store.people()] == ["bob"]


def test_person_score_is_the_best_of_their_templates(store):
    rng = np.random.default_rng(1)
    unmasked, masked = unit(rng, 2)
    store.enroll("ann", np.stack([unmasked, masked]), masked=[False, True])
    store.enroll("bob", unit(rng, 2))
    for probe in (unmasked, masked):
        answer = store.identify(probe, threshold=0.9)
        assert answer.name == "ann" and answer.score == pytest.approx(1.0, abs=1e-5)
    stranger = unit(rng, 1)[0]
    answer = store.identify(stranger, threshold=0.99, top_k=1)
    assert answer.name is None and len(answer.candidates) == 1  # unknown, yet the best guess is listed
    everyone = store.search(stranger[None], top_k=10)[0]
    assert [m.name for m in everyone] == sorted((m.name for m in everyone), key=lambda n: -dict(everyone)[n])
    assert len(everyone) == 2


def test_search_sees_changes_made_by_another_process_connection(tmp_path):
    rng = np.random.default_rng(2)
    first = GalleryStore(tmp_path / "g.db", "model-a", DIM)
    second = GalleryStore(tmp_path / "g.db", "model-a", DIM)
    first.enroll("ann", unit(rng, 1))
    assert second.search(unit(rng, 1))[0][0].name == "ann"
    second.enroll("bob", unit(rng, 1))
    second.delete("ann")
    assert [m.name for m in first.search(unit(rng, 1))[0]] == ["bob"]


@pytest.mark.skipif(not faiss_available(), reason="faiss-cpu not installed (pip install 'meer[faiss]')")
def test_faiss_search_matches_the_matrix_product():
    rng = np.random.default_rng(3)
    names = sorted(f"p{i % 40:02d}" for i in range(120))  # 40 people, 3 templates each
    vectors, probes = unit(rng, 120), unit(rng, 5)
    exact, fast = _Index(names, vectors, "matmul"), _Index(names, vectors, "faiss")
    for a, b in zip(exact.search(probes, 7), fast.search(probes, 7)):
        assert [m.name for m in a] == [m.name for m in b]
        np.testing.assert_allclose([m.score for m in a], [m.score for m in b], atol=1e-5)


def test_search_switches_to_faiss_at_the_measured_size(monkeypatch):
    import meer.gallery

    vectors = unit(np.random.default_rng(9), 6)
    monkeypatch.setattr(meer.gallery, "FAISS_MIN_TEMPLATES", 5)
    expected = "faiss" if faiss_available() else "matmul"  # without FAISS the product serves any size
    assert _Index([f"p{i}" for i in range(6)], vectors).kind == expected
    assert _Index([f"p{i}" for i in range(4)], vectors[:4]).kind == "matmul"


def test_another_model_and_damaged_files_are_refused(tmp_path, store):
    store.enroll("ann", unit(np.random.default_rng(4), 1))
    with pytest.raises(ModelMismatchError, match="another model"):
        GalleryStore(store.path, "model-b", DIM)
    with pytest.raises(ModelMismatchError, match="16-d"):
        GalleryStore(store.path, "model-a", 32)
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"SQLite format 3\x00" + b"\x07" * 4000)
    with pytest.raises(GalleryError, match="not a meer gallery database"):
        GalleryStore(corrupt, "model-a", DIM)
    junk = tmp_path / "junk.db"
    junk.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(GalleryError, match="not a meer gallery database"):
        GalleryStore(junk, "model-a", DIM)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(GalleryError, match="something else"):
        GalleryStore(other, "model-a", DIM)
    with pytest.raises(FileNotFoundError):
        GalleryStore(tmp_path / "missing.db", create=False)
    with pytest.raises(IsADirectoryError):
        GalleryStore(tmp_path, "model-a", DIM)
    assert [p.name for p in GalleryStore(store.path).people()] == ["ann"]  # the original is untouched


@pytest.mark.parametrize(
    "name, embeddings, message",
    [
        ("", None, "empty"),
        ("x" * 101, None, "at most 100"),
        ("tab\there", None, "control characters"),
        ("bad\udcff", None, "not valid UTF-8"),  # a file name that was not UTF-8 (surrogate escape)
        (42, None, "must be text"),
        ("ann", np.full((1, DIM), np.nan), "NaN"),
        ("ann", np.zeros((1, DIM)), "all zeros"),
        ("ann", np.ones((1, DIM + 1)), "numbers \\[N, 16\\]"),
        ("ann", np.array([["a"] * DIM]), "numbers"),
        ("ann", np.zeros((0, DIM)), "no photos"),
    ],
)
def test_bad_names_and_embeddings_are_refused(store, name, embeddings, message):
    embeddings = np.ones((1, DIM)) if embeddings is None else embeddings
    with pytest.raises((GalleryError, ValueError), match=message):
        store.enroll(name, embeddings)
    assert store.people() == [] and template_rows(store.path) == 0


def test_names_are_unique(store):
    rng = np.random.default_rng(5)
    store.enroll("ann", unit(rng, 1))
    store.enroll("bob", unit(rng, 1))
    with pytest.raises(DuplicateNameError, match="already enrolled"):
        store.enroll(" ann ", unit(rng, 2))
    with pytest.raises(DuplicateNameError):
        store.rename("bob", "ann")
    with pytest.raises(UnknownPersonError):
        store.rename("carl", "dan")
    with pytest.raises(UnknownPersonError, match="nobody called 'carl'"):  # not "'ann' is already enrolled"
        store.rename("carl", "ann")
    with pytest.raises(UnknownPersonError):
        store.delete("carl")
    assert [(p.name, p.templates) for p in store.people()] == [("ann", 1), ("bob", 1)]


def test_concurrent_enrolment_of_the_same_person_lets_exactly_one_win(tmp_path):
    path = tmp_path / "g.db"
    GalleryStore(path, "model-a", DIM).close()
    outcomes: list[str] = []

    def enrol(seed):
        with GalleryStore(path, "model-a", DIM) as gallery:  # its own connection, as another process would
            try:
                gallery.enroll("ann", unit(np.random.default_rng(seed), 3))
                outcomes.append("enrolled")
            except DuplicateNameError:
                outcomes.append("duplicate")

    threads = [threading.Thread(target=enrol, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["duplicate"] * 5 + ["enrolled"]
    assert template_rows(path) == 3


def test_a_process_killed_during_an_enrolment_leaves_the_gallery_as_it_was(tmp_path):
    path = tmp_path / "g.db"
    with GalleryStore(path, "model-a", DIM) as gallery:
        gallery.enroll("ann", unit(np.random.default_rng(6), 2))
    script = textwrap.dedent(f"""
        import sys, numpy as np
        from meer.gallery import GalleryStore
        gallery = GalleryStore({str(path)!r}, "model-a", {DIM})
        print("enrolling", flush=True)
        gallery.enroll("bob", np.ones((50, {DIM})))
        print("finished", flush=True)
    """)
    # 50 templates, 0.2 s apart, in one transaction: killed about 1 s (5 templates) in
    env = {"MEER_TEST_ENROLL_SLEEP": "0.2", "PATH": ""}
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout.readline().strip() == "enrolling"
    threading.Event().wait(1.0)
    process.kill()
    assert process.wait(10) < 0 and process.stdout.read() == ""  # killed, not finished
    with GalleryStore(path, "model-a", DIM) as gallery:
        assert [(p.name, p.templates) for p in gallery.people()] == [("ann", 2)]
    assert template_rows(path) == 2


def test_identification_threshold_is_calibrated_for_a_target_false_accept_rate(tmp_path):
    rng = np.random.default_rng(7)
    people, dim = 50, 32
    centres = unit(rng, people + 200, dim)  # 50 enrolled validation people, 200 held out

    def samples(ids, noise):
        x = centres[ids] + noise * rng.standard_normal((len(ids), dim)).astype(np.float32) / np.sqrt(dim)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    enrolled = np.repeat(np.arange(people), 2)
    gallery = samples(enrolled, 0.5)
    known_ids = rng.integers(0, people, 400)
    known = samples(known_ids, 0.8)
    unknown = samples(rng.integers(people, people + 200, 1000), 0.8)
    result = calibrate_identification(gallery, enrolled, known, known_ids, unknown, target_far=0.01)
    assert result.far <= 0.01 and (result.num_known, result.num_unknown) == (400, 1000)
    assert result.dir > 0.9  # well separated synthetic identities are found at 1% FAR
    loose = calibrate_identification(gallery, enrolled, known, known_ids, unknown, target_far=0.2)
    assert loose.threshold < result.threshold and 0.1 < loose.far <= 0.2 and loose.dir >= result.dir

    with pytest.raises(ValueError, match="calibrate verification first"):
        write_identification_calibration(tmp_path, result, "synthetic")
    write_calibration(tmp_path, Calibration(threshold=0.42, protocol="M-U", accuracy=0.9, setting="M-U"))
    write_identification_calibration(tmp_path, result, "synthetic-val open-set")
    stored = read_calibration(tmp_path)
    assert stored.threshold == 0.42 and stored.identification_threshold == result.threshold
    assert stored.identification_far == result.far and "target FAR 0.01" in stored.identification_protocol
    with pytest.raises(ValueError, match="target_far"):
        calibrate_identification(gallery, enrolled, known, known_ids, unknown, target_far=0)
