"""`embed_and_classify`: the embeddings and mask classes of one forward pass are exactly those
of `embed_images` and `mask_classes`, which each run the network on their own."""

import numpy as np
import pytest

import meer
from meer.data.masks import MaskRenderer
from meer.data.synthetic import SyntheticFaces
from meer.inference.batched import embed_and_classify, embed_images, mask_classes


@pytest.fixture(scope="module")
def network():
    return meer.load(detector=None).network  # the shipped model


@pytest.fixture(scope="module")
def faces():
    """Three synthetic faces and the same three masked: 112 px uint8 [6, 112, 112, 3]."""
    plain = SyntheticFaces(3, 1, 112, seed=7).generate()
    renderer = MaskRenderer()
    masked = [renderer(image, points, np.random.default_rng(i)).masked
              for i, (image, points) in enumerate(zip(plain.images, plain.landmarks))]
    return np.stack([*plain.images, *masked])


@pytest.mark.parametrize("flip", [False, True])
def test_one_pass_gives_exactly_the_embeddings_and_mask_classes_of_two(network, faces, flip):
    embeddings, classes = embed_and_classify(network, faces, batch_size=4, flip=flip)  # a full and a part batch
    assert np.array_equal(embeddings, embed_images(network, faces, batch_size=4, flip=flip))
    assert np.array_equal(classes, mask_classes(network, faces, batch_size=4))
    assert embeddings.dtype == np.float32 and classes.dtype == np.int64
    assert len(set(classes.tolist())) > 1  # the faces are told apart, so the comparison can tell


def test_flip_changes_the_embeddings_but_not_the_classes(network, faces):
    plain, plain_classes = embed_and_classify(network, faces)
    mirrored, mirrored_classes = embed_and_classify(network, faces, flip=True)
    assert not np.array_equal(plain, mirrored) and np.array_equal(plain_classes, mirrored_classes)


def test_a_model_without_a_mask_classifier_has_no_classes(faces):
    network = meer.load(detector=None).network
    network.decouple, network.generator = None, None
    embeddings, classes = embed_and_classify(network, faces[:2])
    assert classes is None and np.array_equal(embeddings, embed_images(network, faces[:2]))
