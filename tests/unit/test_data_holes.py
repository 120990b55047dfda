"""The photo-to-crop matrix of already aligned sources, and the pooled calibration threshold."""

import numpy as np
import pytest

from meer.data.align import transform_points
from meer.data.cache import FaceCache
from meer.data.faceset import FaceSet, arcface_template
from meer.data.prepare import prepare_dataset
from meer.eval.evaluate import Embeddings
from meer.eval.pairs import Pairs
from meer.eval.suite import ProtocolResult, VerificationSet, pooled_threshold
from meer.eval.verification import best_threshold
from tests.unit.facefiles import write_insightface_rec


@pytest.mark.parametrize("size", [56, 160])
def test_pre_aligned_source_matrix_maps_the_source_template_onto_the_crop(tmp_path, size):
    write_insightface_rec(tmp_path, [0, 0, 1])  # 112x112 crops already on the ArcFace template
    prepare_dataset(tmp_path, tmp_path / "out", size=size, progress=False, workers=1)
    cache = FaceCache.open(tmp_path / "out")
    assert cache.matrices.shape == (3, 2, 3)
    for matrix, landmarks in zip(cache.matrices, cache.faces.landmarks):
        np.testing.assert_allclose(transform_points(arcface_template(112), matrix), arcface_template(size), atol=1e-4)
        np.testing.assert_allclose(landmarks, arcface_template(size), atol=1e-4)
        np.testing.assert_allclose(transform_points([[112, 112]], matrix), [[size, size]], atol=1e-4)


def test_pooled_threshold_scores_the_named_setting_over_all_pairs():
    # 2-d unit embeddings at chosen angles: the three settings have different best thresholds
    def at(degrees):
        return np.stack([np.cos(np.radians(degrees)), np.sin(np.radians(degrees))], 1)

    clean = at(np.array([0, 10, 90, 100]))
    masked = at(np.array([30, 60, 150, 170]))
    pairs = Pairs(first=np.array([0, 0, 2, 1]), second=np.array([1, 2, 3, 3]), same=np.array([True, False, True, False]),
                  fold=np.array([0, 0, 1, 1]))
    faces = FaceSet(np.zeros((4, 8, 8, 3), np.uint8), np.zeros((4, 5, 2), np.float32), np.arange(4), ["a", "b", "c", "d"])
    protocol = VerificationSet("toy", faces, pairs)
    result = ProtocolResult({}, Embeddings(clean, masked))
    chosen = {}
    for setting, (first, second) in {"U-U": (clean, clean), "M-U": (clean, masked), "M-M": (masked, masked)}.items():
        scores = np.sum(first[pairs.first] * second[pairs.second], 1)
        chosen[setting] = pooled_threshold(result, protocol, setting)
        assert chosen[setting] == pytest.approx(best_threshold(scores, pairs.same))
    assert len({round(t, 6) for t, _ in chosen.values()}) == 3
    with pytest.raises(ValueError, match="unknown setting"):
        pooled_threshold(result, protocol, "X-X")
