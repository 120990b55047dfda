import cv2
import numpy as np
import pytest

from meer.data.align import align_face
from meer.data.detect import (
    Detection,
    FallbackDetector,
    available_detectors,
    create_detector,
    detect_faces,
    detect_with_padding,
    pick_main_face,
)
from meer.data.faceset import arcface_template


def face(x1, y1, side, score=0.9):
    box = np.array([x1, y1, x1 + side, y1 + side], np.float32)
    return Detection(box, score, arcface_template(side) + box[:2])


def test_pick_main_face_prefers_large_then_central():
    shape = (200, 200, 3)
    centre_small, corner_big = face(80, 80, 40), face(0, 0, 60)
    assert pick_main_face([centre_small, corner_big], shape) is centre_small
    centre_big = face(60, 60, 80)
    assert pick_main_face([centre_small, centre_big, corner_big], shape) is centre_big
    assert pick_main_face([], shape) is None


class EdgeShy:
    """Finds a face only when it is not touching the border (like real detectors on tight crops)."""

    name = "edge-shy"

    def detect(self, image):
        height, width = image.shape[:2]
        if height < 150:
            return []
        return [face(width / 4, height / 4, width / 2)]


def test_detect_with_padding_maps_back_to_the_original_image():
    image = np.zeros((100, 100, 3), np.uint8)
    [found] = detect_with_padding(EdgeShy(), image, pad=0.5)
    # the padded image is 200x200; its face box [50, 50, 150, 150] is [0, 0, 100, 100] here
    np.testing.assert_allclose(found.box, [0, 0, 100, 100])
    assert detect_with_padding(EdgeShy(), image, pad=0.0) == []


def test_detect_faces_downscales_large_photos_and_maps_back():
    image = np.zeros((400, 300, 3), np.uint8)
    [found] = detect_faces(EdgeShy(), image, max_side=140)
    # searched at 140x105 (x0.35), padded by 35 to 210x175: face at (43.75, 52.5), 87.5 wide
    np.testing.assert_allclose(found.box, [25, 50, 275, 300], atol=1e-3)
    expected = (arcface_template(87.5) + [43.75 - 35, 52.5 - 35]) / 0.35
    np.testing.assert_allclose(found.landmarks5, expected, atol=1e-3)


class Blind:
    name = "blind"

    def __init__(self):
        self.calls = 0

    def detect(self, image):
        self.calls += 1
        return []


class Everywhere:
    name = "everywhere"

    def detect(self, image):
        return [face(0, 0, image.shape[1], score=0.5)]


def test_a_fallback_chain_asks_the_next_detector_only_when_one_finds_nothing_even_padded():
    image = np.zeros((100, 100, 3), np.uint8)
    blind = Blind()
    chain = FallbackDetector([blind, EdgeShy(), Everywhere()], pad=0.5)
    assert chain.name == "blind,edge-shy,everywhere"
    [found] = chain.detect(image)  # EdgeShy finds the face on the padded image: Everywhere is not asked
    np.testing.assert_allclose(found.box, [0, 0, 100, 100])
    assert found.score == 0.9 and blind.calls == 2  # the image and its padded copy
    assert FallbackDetector([Blind(), Blind()]).detect(image) == []


def test_a_chain_in_detect_faces_asks_each_member_twice_on_a_faceless_photo():
    first, second = Blind(), Blind()  # not four times: the chain's own padded retry is the only one
    assert detect_faces(FallbackDetector([first, second]), np.zeros((100, 100, 3), np.uint8)) == []
    assert (first.calls, second.calls) == (2, 2)
    assert detect_faces(FallbackDetector([first, second]), np.zeros((100, 100, 3), np.uint8), pad=0) == []
    assert (first.calls, second.calls) == (3, 3)  # pad 0: no padded retry at all
    with pytest.raises(ValueError, match="two"):
        FallbackDetector([Blind()])


@pytest.mark.skipif(len(available_detectors()) < 2, reason="needs two detectors installed")
def test_auto_chains_the_installed_detectors_in_preference_order():
    detector = create_detector("auto")
    assert detector.name == ",".join(available_detectors())
    assert create_detector("mtcnn, yunet").name == "mtcnn,yunet"


def test_unknown_detector_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown detector"):
        create_detector("dlib")


needs_mtcnn = pytest.mark.skipif("mtcnn" not in available_detectors(), reason="pip install 'meer[detect]'")


@needs_mtcnn
def test_mtcnn_on_a_blank_image_finds_nothing():
    assert create_detector("mtcnn").detect(np.full((120, 160, 3), 128, np.uint8)) == []


needs_yunet = pytest.mark.skipif("yunet" not in available_detectors(), reason="pip install 'meer[sface]'")


@needs_yunet
def test_yunet_runs_the_int8_file_and_finds_nothing_on_a_blank_image():
    detector = create_detector("yunet")
    assert detector.name == "yunet"
    assert detector.detect(np.full((120, 160, 3), 128, np.uint8)) == []
    with pytest.raises(ValueError, match="RGB"):
        detector.detect(np.zeros((50, 50), np.uint8))


@needs_yunet
def test_creating_yunet_prints_no_opencv_warning_and_keeps_opencv_log_level(capfd):
    level = cv2.utils.logging.getLogLevel()
    create_detector("yunet")
    assert "WARN" not in capfd.readouterr().err
    assert cv2.utils.logging.getLogLevel() == level


@pytest.mark.parametrize("backend", [pytest.param("mtcnn", marks=needs_mtcnn), pytest.param("yunet", marks=needs_yunet)])
@pytest.mark.data
def test_detectors_find_the_lfw_face_with_landmarks_in_meer_order(shared_data, backend):
    bgr = cv2.imread(str(shared_data / "lfw" / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg"))
    image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    main = pick_main_face(create_detector(backend).detect(image), image.shape)
    assert main is not None and main.score > 0.9
    left_eye, right_eye, nose, left_mouth, right_mouth = main.landmarks5
    assert left_eye[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])
    # LFW photos are centred on the face
    assert np.all(np.abs(main.landmarks5.mean(0) - [125, 125]) < 25)
    _, _, aligned_points = align_face(image, main.landmarks5)
    assert np.abs(aligned_points - arcface_template(112)).max() < 8
