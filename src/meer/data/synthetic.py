"""Procedural synthetic faces with identities: the built-in dataset that needs no download.

Each identity is a fixed set of facial traits drawn from ``(seed, identity)``; each sample of
it varies pose, expression, lighting, colour, background, blur and noise, drawn from
``(seed, identity, sample)``. Identity is deliberately spread over the whole face: face
shape, hair, brows, eyes and glasses above the nose; nose, lips, chin, beard and moles below
it. A mask over the lower face therefore removes part of the identity signal but leaves
enough above it to recognise the person, which is the situation MEER is built for.

Faces are drawn in a canonical frame that matches the ArcFace 112x112 template (so the
rendered images look like aligned crops), rendered at twice the output size with
antialiased polygons and downsampled, so that 32-64 pixel faces still read as faces.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass

import cv2
import numpy as np
from tqdm import tqdm

from meer.data.faceset import FaceSet

# Canonical frame: ArcFace 112x112 template coordinates. The face is symmetric about x = 56.
CENTRE_X = 56.0
ROTATION_CENTRE = (56.0, 64.0)  # in-plane rotation and scale happen about the mid face
CHUNK = 256  # faces per task of a parallel generate()
HEAD_DEPTH = 30.0  # depth of the face surface at its centre line (canonical px), for yaw

# Anchors of the skin-tone scale, light to dark (RGB).
SKIN_TONES = np.array(
    [(250, 222, 200), (238, 196, 168), (222, 170, 134), (196, 136, 100), (160, 104, 72), (112, 72, 50), (78, 52, 38)],
    np.float32,
)
HAIR_COLOURS = np.array(
    [(22, 18, 16), (52, 36, 26), (96, 64, 42), (140, 104, 68), (206, 174, 118), (150, 72, 38), (150, 146, 142),
     (214, 210, 202)],
    np.float32,
)
HAIR_WEIGHTS = np.array([0.26, 0.22, 0.17, 0.1, 0.09, 0.06, 0.06, 0.04])
IRIS_COLOURS = np.array(
    [(58, 36, 24), (100, 62, 34), (122, 98, 54), (76, 118, 72), (78, 118, 168), (118, 128, 138)], np.float32
)
IRIS_WEIGHTS = np.array([0.35, 0.25, 0.12, 0.08, 0.12, 0.08])
HAIR_STYLES = ("bald", "short", "fringe", "side", "long", "bun")


@dataclass(frozen=True)
class _Identity:
    """The traits that make one synthetic person, in canonical (112 template) pixels."""

    # face shape
    face_hw: float  # half width at the cheekbones
    top_y: float  # top of the skull
    cheek_y: float  # height of the widest point
    chin_y: float  # bottom of the chin
    jaw_power: float  # superellipse exponent of the lower face: 2 = round, 3.5 = square jaw
    skin: np.ndarray  # RGB float
    # hair
    hair: np.ndarray
    hair_style: str
    hairline_y: float
    hairline_curve: float  # how much the hairline rises at the temples (receding > 0)
    parting: float  # horizontal offset of a side parting / fringe asymmetry
    # upper face
    eye_half: float  # half the distance between the eye centres
    eye_y: float
    eye_w: float  # half width of an eye
    eye_h: float  # opening height of an eye
    eye_tilt: float  # canthal tilt (canonical px, + = outer corner up)
    iris: np.ndarray
    brow_thick: float
    brow_arch: float
    brow_len: float
    brow_gap: float  # distance from eye centre to brow
    brow_tilt: float
    glasses: int  # 0 none, 1 round, 2 rectangular
    glasses_colour: np.ndarray
    ear_size: float
    # lower face
    nose_y: float
    nose_w: float  # half width of the nostrils
    nose_tip: float  # size of the tip
    mouth_y: float
    mouth_half: float
    lip_upper: float
    lip_lower: float
    lip: np.ndarray
    beard: int  # 0 none, 1 stubble, 2 goatee, 3 full beard
    moustache: bool
    moles: np.ndarray  # [K, 3]: x, y, radius
    freckles: bool
    cheek_tone: np.ndarray  # colour multiplier of the cheeks (blush or shade)


def _mix(palette: np.ndarray, weights: np.ndarray, rng: np.random.Generator, jitter: float) -> np.ndarray:
    colour = palette[rng.choice(len(palette), p=weights)]
    return np.clip(colour * (1 + rng.normal(0, jitter, 3)), 0, 255).astype(np.float32)


def _draw_identity(rng: np.random.Generator) -> _Identity:
    u = rng.uniform
    tone = u(0, len(SKIN_TONES) - 1)
    low = int(tone)
    skin = SKIN_TONES[low] + (SKIN_TONES[min(low + 1, len(SKIN_TONES) - 1)] - SKIN_TONES[low]) * (tone - low)
    skin = np.clip(skin * (1 + rng.normal(0, 0.04, 3)), 0, 255).astype(np.float32)
    hair = _mix(HAIR_COLOURS, HAIR_WEIGHTS, rng, 0.08)
    style = HAIR_STYLES[rng.choice(len(HAIR_STYLES), p=[0.08, 0.3, 0.2, 0.17, 0.18, 0.07])]
    beard = int(rng.choice(4, p=[0.62, 0.14, 0.1, 0.14]))
    n_moles = int(rng.choice(4, p=[0.5, 0.3, 0.15, 0.05]))
    moles = np.stack(
        [u(30, 82, n_moles), u(40, 108, n_moles), u(0.8, 1.6, n_moles)], axis=1
    ).astype(np.float32)
    lip = np.clip(skin * np.array([0.86, 0.6, 0.62]) + np.array([28, 4, 10]) * u(0.3, 1.2), 0, 255)
    return _Identity(
        face_hw=u(39, 48), top_y=u(-6, 6), cheek_y=u(52, 64), chin_y=u(106, 117), jaw_power=u(1.8, 3.6),
        skin=skin, hair=hair, hair_style=style, hairline_y=u(14, 30), hairline_curve=u(-4, 10),
        parting=u(-14, 14),
        eye_half=u(15.8, 19.4), eye_y=51.6 + u(-2.5, 2.5), eye_w=u(5.4, 7.4), eye_h=u(3.6, 5.6),
        eye_tilt=u(-1.2, 1.6), iris=_mix(IRIS_COLOURS, IRIS_WEIGHTS, rng, 0.1),
        brow_thick=u(1.6, 4.2), brow_arch=u(0.0, 3.5), brow_len=u(15, 22), brow_gap=u(7, 11),
        brow_tilt=u(-2.5, 2.5),
        glasses=int(rng.choice(3, p=[0.8, 0.1, 0.1])), glasses_colour=(rng.uniform(0, 1, 3) ** 2 * 160).astype(np.float32),
        ear_size=u(0.85, 1.2),
        nose_y=71.7 + u(-3.5, 3.5), nose_w=u(6.5, 10.5), nose_tip=u(2.8, 5.0),
        mouth_y=92.3 + u(-2.5, 2.5), mouth_half=u(11.5, 17.5), lip_upper=u(1.6, 3.6), lip_lower=u(2.4, 5.4),
        lip=lip.astype(np.float32), beard=beard, moustache=bool(rng.random() < (0.7 if beard else 0.1)),
        moles=moles, freckles=bool(rng.random() < 0.12),
        cheek_tone=(1 + rng.normal(0, 0.05, 3)).astype(np.float32),
    )


class _Canvas:
    """A 2x canvas with the sample's pose: every shape is given in canonical coordinates.

    The pose maps canonical points to output pixels: a yaw (features move sideways in
    proportion to their depth, the silhouette does not), then roll, scale and shift about the
    mid face. Drawing happens at twice the output resolution.
    """

    SHIFT = 4  # fixed-point bits for sub-pixel polygon vertices

    def __init__(self, size: int, roll: float, scale: float, shift: np.ndarray, yaw: float, face_hw: float) -> None:
        self.size = size
        self.image = np.empty((2 * size, 2 * size, 3), np.uint8)
        self.yaw_sin, self.yaw_cos = math.sin(yaw), math.cos(yaw)
        self.face_rx = face_hw + 4.0
        # The eyes stay where alignment would put them: depth is measured from the eyes' depth.
        self.eye_depth = self.depth(np.array([CENTRE_X - 17.6]))[0] - 3.0
        c, s = math.cos(roll) * scale, math.sin(roll) * scale
        k = size / 112.0
        cx, cy = ROTATION_CENTRE
        # canonical (after yaw) -> output pixels: [[a, -b], [b, a]] @ p + (tx, ty)
        self.a, self.b = c * k, s * k
        self.tx = (cx + shift[0]) * k - (self.a * cx - self.b * cy)
        self.ty = (cy + shift[1]) * k - (self.b * cx + self.a * cy)

    def depth(self, x: np.ndarray) -> np.ndarray:
        """Depth of the face surface at canonical abscissae ``x`` [N] (a cylinder-like head)."""
        r = (x - CENTRE_X) / self.face_rx
        return HEAD_DEPTH * np.sqrt(np.clip(1.0 - r * r, 0.0, 1.0))

    def to_output(self, points: np.ndarray, depth: float = 0.0) -> np.ndarray:
        """Canonical [N, 2] -> output pixel coordinates [N, 2] (float64)."""
        x, y = points[:, 0], points[:, 1]
        z = self.depth(x) + (depth - self.eye_depth)
        x = CENTRE_X + (x - CENTRE_X) * self.yaw_cos + z * self.yaw_sin
        return np.stack([self.a * x - self.b * y + self.tx, self.b * x + self.a * y + self.ty], axis=1)

    def _fixed(self, points: np.ndarray, depth: float) -> np.ndarray:
        # An output pixel centre j sits at 2j + 0.5 on the 2x canvas (INTER_AREA halves it back).
        return ((self.to_output(np.asarray(points, np.float64), depth) * 2.0 + 0.5) * (1 << self.SHIFT)).astype(np.int32)

    def fill(self, points: np.ndarray, colour: np.ndarray, depth: float = 0.0) -> None:
        cv2.fillPoly(self.image, [self._fixed(points, depth)], _rgb(colour), cv2.LINE_AA, self.SHIFT)

    def fill_output(self, points: np.ndarray, colour: np.ndarray) -> None:
        """Fill a polygon given in output pixel coordinates [N, 2] (already posed)."""
        fixed = ((np.asarray(points, np.float64) * 2.0 + 0.5) * (1 << self.SHIFT)).astype(np.int32)
        cv2.fillPoly(self.image, [fixed], _rgb(colour), cv2.LINE_AA, self.SHIFT)

    def line(self, points: np.ndarray, colour: np.ndarray, width: float, depth: float = 0.0, closed: bool = False) -> None:
        thickness = max(1, round(width * self.size / 56.0))  # width in canonical px, drawn at 2x
        cv2.polylines(self.image, [self._fixed(points, depth)], closed, _rgb(colour), thickness, cv2.LINE_AA, self.SHIFT)

    def blend(self, points: np.ndarray, colour: np.ndarray, alpha: float, blur: float = 0.0, depth: float = 0.0) -> None:
        """Alpha-blend a (soft) polygon; ``blur`` is a Gaussian sigma in canonical px.

        Only the polygon's bounding box (plus the blur's reach) is touched, which keeps the
        many soft shading strokes of a face cheap.
        """
        fixed = self._fixed(points, depth)
        sigma = blur * self.size / 56.0
        margin = int(math.ceil(3 * sigma)) + 2
        side = self.image.shape[0]
        low = np.maximum((fixed.min(axis=0) >> self.SHIFT) - margin, 0)
        high = np.minimum((fixed.max(axis=0) >> self.SHIFT) + margin + 1, side)
        if np.any(high <= low):
            return
        cover = np.zeros((high[1] - low[1], high[0] - low[0]), np.uint8)
        cv2.fillPoly(cover, [fixed - (low << self.SHIFT)], 255, cv2.LINE_AA, self.SHIFT)
        if sigma > 0:
            cover = _soften(cover, sigma)
        region = self.image[low[1] : high[1], low[0] : high[0]]
        weight = cover.astype(np.float32)[..., None] * (alpha / 255.0)
        target = np.clip(np.asarray(colour, np.float32), 0, 255)
        region[:] = region + weight * (target - region) + 0.5


def _soften(cover: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; wide blurs run on a downscaled copy (a large kernel costs ~1 ms)."""
    factor = max(1, int(sigma / 1.5))
    if factor == 1:
        return cv2.GaussianBlur(cover, (0, 0), sigma)
    height, width = cover.shape
    small = cv2.resize(cover, (max(1, width // factor), max(1, height // factor)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / factor)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def _rgb(colour: np.ndarray) -> tuple[float, float, float]:
    r, g, b = colour
    return min(max(float(r), 0.0), 255.0), min(max(float(g), 0.0), 255.0), min(max(float(b), 0.0), 255.0)


def _ellipse(cx: float, cy: float, rx: float, ry: float, start: float = 0.0, end: float = 2 * math.pi,
             n: int = 24, angle: float = 0.0) -> np.ndarray:
    """Points [n, 2] on an ellipse arc (angles in radians)."""
    t = np.linspace(start, end, n)
    x, y = rx * np.cos(t), ry * np.sin(t)
    if angle:
        ca, sa = math.cos(angle), math.sin(angle)
        x, y = ca * x - sa * y, sa * x + ca * y
    return np.stack([cx + x, cy + y], axis=1)


def _mirror(points: np.ndarray) -> np.ndarray:
    mirrored = points.copy()
    mirrored[:, 0] = 2 * CENTRE_X - mirrored[:, 0]
    return mirrored


class SyntheticFaces:
    """A deterministic population of synthetic identities rendered as aligned face crops.

    ``render(identity, sample)`` depends only on ``(seed, identity, sample)``, so the same
    arguments give identical pixels on every machine and call order.

    Args:
        num_identities: number of people.
        images_per_identity: samples rendered per person by :meth:`generate`.
        size: output side in pixels (square crops aligned like ``arcface_template(size)``).
        seed: population seed; a different seed gives different people.
    """

    def __init__(self, num_identities: int, images_per_identity: int, size: int = 112, seed: int = 0) -> None:
        if num_identities < 1 or images_per_identity < 1:
            raise ValueError("num_identities and images_per_identity must be at least 1")
        if size < 16:
            raise ValueError(f"size must be at least 16 pixels, got {size}")
        self.num_identities = num_identities
        self.images_per_identity = images_per_identity
        self.size = size
        self.seed = seed
        self._identities: dict[int, _Identity] = {}

    def identity(self, index: int) -> _Identity:
        if not 0 <= index < self.num_identities:
            raise ValueError(f"identity {index} out of range(0, {self.num_identities})")
        if index not in self._identities:
            self._identities[index] = _draw_identity(np.random.default_rng([self.seed, 0, index]))
        return self._identities[index]

    def render(self, identity: int, sample: int) -> tuple[np.ndarray, np.ndarray]:
        """One face: uint8 [size, size, 3] RGB and its 5 landmarks, float32 [5, 2] (x, y)."""
        person = self.identity(identity)
        rng = np.random.default_rng([self.seed, 1, identity, sample])
        canvas = _Canvas(
            self.size,
            roll=math.radians(rng.normal(0, 4.5)),
            scale=float(np.clip(rng.normal(1.0, 0.035), 0.92, 1.08)),
            shift=rng.normal(0, 1.3, 2),
            yaw=float(np.clip(rng.normal(0, 0.2), -0.45, 0.45)),
            face_hw=person.face_hw,
        )
        _background(canvas, rng)
        points = _draw_face(canvas, person, rng)
        image = _finish(canvas.image, self.size, rng)
        landmarks = np.concatenate(
            [canvas.to_output(points[:2], -3.0), canvas.to_output(points[2:3], 14.0), canvas.to_output(points[3:], 3.0)]
        )
        return image, landmarks.astype(np.float32)

    def generate(self, progress: bool = False, workers: int | None = None) -> FaceSet:
        """All ``num_identities * images_per_identity`` faces; ``labels`` = identity index.

        ``workers`` processes render them where processes can fork (default:
        :func:`default_workers`; 0 = in this process). Each face depends only on
        ``(seed, identity, sample)``, so the result is the same for any number of workers.
        """
        n = self.num_identities * self.images_per_identity
        images = np.empty((n, self.size, self.size, 3), np.uint8)
        landmarks = np.empty((n, 5, 2), np.float32)
        labels = np.repeat(np.arange(self.num_identities, dtype=np.int64), self.images_per_identity)
        if workers is None:
            workers = default_workers()
        chunks = [range(start, min(start + CHUNK, n)) for start in range(0, n, CHUNK)]
        with ExitStack() as stack:
            bar = stack.enter_context(tqdm(total=n, desc="synthetic faces", unit="face", disable=not progress))
            rendered = map(self._render_rows, chunks)
            if workers > 1 and len(chunks) > 1 and "fork" in multiprocessing.get_all_start_methods():
                # fork, as DataLoader workers do (spawn would re-run a user's unguarded script), with
                # OpenCV at one thread: a forked copy of its thread pool deadlocks, and with one
                # thread there is no pool, here or in the children
                stack.callback(cv2.setNumThreads, cv2.getNumThreads())
                cv2.setNumThreads(1)
                pool = stack.enter_context(
                    ProcessPoolExecutor(min(workers, len(chunks)), multiprocessing.get_context("fork"))
                )
                rendered = pool.map(self._render_rows, chunks)
            for rows, (chunk_images, chunk_landmarks) in zip(chunks, rendered):
                images[rows.start : rows.stop], landmarks[rows.start : rows.stop] = chunk_images, chunk_landmarks
                bar.update(len(rows))
        return FaceSet(images, landmarks, labels, [f"synthetic_{i:05d}" for i in range(self.num_identities)])

    def _render_rows(self, rows: range) -> tuple[np.ndarray, np.ndarray]:
        """Faces ``rows`` of :meth:`generate`: uint8 [R, size, size, 3] and float32 [R, 5, 2]."""
        images = np.empty((len(rows), self.size, self.size, 3), np.uint8)
        landmarks = np.empty((len(rows), 5, 2), np.float32)
        for i, row in enumerate(rows):
            identity, sample = divmod(row, self.images_per_identity)
            images[i], landmarks[i] = self.render(identity, sample)
        return images, landmarks


def default_workers() -> int:
    """Processes :meth:`SyntheticFaces.generate` uses by default: one per CPU core, up to 8."""
    return min(os.cpu_count() or 1, 8)


def _background(canvas: _Canvas, rng: np.random.Generator) -> None:
    """A two-colour gradient with a few soft blobs: varied, and unrelated to identity."""
    side = canvas.image.shape[0]
    first, second = rng.uniform(20, 235, 3), rng.uniform(20, 235, 3)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = np.linspace(-1, 1, 4, dtype=np.float32)
    t = 0.5 + 0.5 * (math.cos(angle) * ramp[None, :] + math.sin(angle) * ramp[:, None])
    coarse = (first + t[..., None] * (second - first)).astype(np.uint8)
    canvas.image[:] = cv2.resize(coarse, (side, side), interpolation=cv2.INTER_LINEAR)
    for _ in range(rng.integers(0, 4)):
        centre = rng.uniform(-10, 122, 2)
        radius = rng.uniform(8, 40, 2)
        canvas.blend(_ellipse(*centre, *radius, n=16), rng.uniform(0, 255, 3), rng.uniform(0.2, 0.6), blur=4)


def _face_outline(p: _Identity, n: int = 40) -> np.ndarray:
    """Closed face contour [2n, 2]: an ellipse above the cheekbones, a superellipse below."""
    upper = np.linspace(p.top_y, p.cheek_y, n // 2, endpoint=False)
    half_upper = p.face_hw * np.sqrt(np.clip(1 - ((p.cheek_y - upper) / (p.cheek_y - p.top_y)) ** 2, 0, 1))
    s = np.linspace(0, 1, n - n // 2)
    lower = p.cheek_y + s * (p.chin_y - p.cheek_y)
    half_lower = p.face_hw * (1 - s**p.jaw_power) ** (1 / p.jaw_power)
    ys = np.concatenate([upper, lower])
    half = np.concatenate([half_upper, half_lower])
    right = np.stack([CENTRE_X + half, ys], axis=1)
    return np.concatenate([right, _mirror(right)[::-1]])


def _half_width(p: _Identity, y: float) -> float:
    if y <= p.cheek_y:
        return p.face_hw * math.sqrt(max(0.0, 1 - ((p.cheek_y - y) / (p.cheek_y - p.top_y)) ** 2))
    s = min(1.0, (y - p.cheek_y) / (p.chin_y - p.cheek_y))
    return p.face_hw * (1 - s**p.jaw_power) ** (1 / p.jaw_power)


def _draw_face(canvas: _Canvas, p: _Identity, rng: np.random.Generator) -> np.ndarray:
    """Draw the head back to front; return the canonical 5 landmarks [5, 2] of this expression."""
    u = rng.uniform
    skin = np.clip(p.skin * (1 + rng.normal(0, 0.03, 3)), 0, 255)
    hair = p.hair
    shade = skin * 0.72
    smile = float(np.clip(rng.normal(0.25, 0.35), 0, 1))
    mouth_open = float(np.clip(rng.normal(-0.2, 0.45), 0, 1))
    brow_raise = float(np.clip(rng.normal(0, 1.0), -1, 2.5))
    blink = rng.random() < 0.05
    gaze = rng.normal(0, 0.8, 2)

    # Behind the head: long hair, neck and clothes, ears.
    if p.hair_style == "long":
        back = np.concatenate([_ellipse(CENTRE_X, 52, p.face_hw + 10, 60, math.pi, 2 * math.pi, 20),
                               [[CENTRE_X + p.face_hw + 14, 130], [CENTRE_X - p.face_hw - 14, 130]]])
        canvas.fill(back, hair * 0.8, depth=-20)
    neck_w = p.face_hw * 0.62
    canvas.fill(np.array([[CENTRE_X - neck_w, 80], [CENTRE_X + neck_w, 80], [CENTRE_X + neck_w + 4, 130],
                          [CENTRE_X - neck_w - 4, 130]]), shade, depth=-15)
    clothes = rng.uniform(10, 240, 3)
    canvas.fill(_ellipse(CENTRE_X, 150, 90, 34 + u(-4, 4), n=24), clothes, depth=-25)
    if p.hair_style != "long":
        ear_y = (p.eye_y + p.nose_y) / 2
        for sign in (-1, 1):
            ex = CENTRE_X + sign * (_half_width(p, ear_y) + 1.5)
            canvas.fill(_ellipse(ex, ear_y, 5.5 * p.ear_size, 11 * p.ear_size), skin * 0.9, depth=-12)
            canvas.fill(_ellipse(ex + sign * 0.8, ear_y, 2.4 * p.ear_size, 7 * p.ear_size), skin * 0.68, depth=-12)
    if p.hair_style == "bun":
        canvas.fill(_ellipse(CENTRE_X + p.parting * 0.5, p.top_y - 4, 13, 10), hair * 0.9, depth=-10)

    # The face, then soft shading towards its edge and under the chin.
    outline = _face_outline(p)
    canvas.fill(outline, skin)
    inner = outline.copy()
    inner[:, 0] = CENTRE_X + (inner[:, 0] - CENTRE_X) * 0.72
    inner[:, 1] = 62 + (inner[:, 1] - 62) * 0.85
    canvas.blend(outline, shade, 0.35, blur=1.5)
    canvas.blend(inner, skin * 1.06, 0.8, blur=7)
    for sign in (-1, 1):
        cheek = _ellipse(CENTRE_X + sign * (p.eye_half + 4), p.nose_y + 4, 9, 7, n=12)
        canvas.blend(cheek, np.clip(skin * p.cheek_tone, 0, 255), 0.6, blur=4)

    # Hair on top of the forehead.
    _draw_hair(canvas, p, hair)

    # Eyes and brows.
    eye_open = 0.15 if blink else 1.0
    eye_centres = []
    for sign in (-1, 1):
        cx, cy = CENTRE_X + sign * p.eye_half, p.eye_y
        eye_centres.append((cx, cy))
        xs = np.linspace(-1, 1, 13)
        tilt = -p.eye_tilt * xs * sign  # outer corner (sign * x > 0) goes up when tilt > 0
        upper = np.stack([cx + sign * xs * p.eye_w, cy + tilt - p.eye_h * 0.62 * eye_open * (1 - xs**2) ** 0.8], 1)
        lower = np.stack([cx + sign * xs * p.eye_w, cy + tilt + p.eye_h * 0.38 * eye_open * (1 - xs**2) ** 0.9], 1)
        almond = np.concatenate([upper, lower[::-1]])
        canvas.fill(_ellipse(cx, cy - 1, p.eye_w + 2.5, p.eye_h + 1.5, n=14), skin * 0.88, depth=-3)
        canvas.fill(almond, np.array([236, 232, 226]), depth=-3)
        if not blink:
            iris_r = p.eye_h * 0.62 + 1.0
            ix, iy = cx + gaze[0], cy + gaze[1] * 0.5
            iris = canvas.to_output(_ellipse(ix, iy, iris_r, iris_r, n=16), -3.0).astype(np.float32)
            clip, hull = cv2.intersectConvexConvex(iris, canvas.to_output(almond, -3.0).astype(np.float32))
            if clip > 0 and hull is not None:
                canvas.fill_output(hull[:, 0], p.iris)
                pupil = canvas.to_output(_ellipse(ix, iy, iris_r * 0.42, iris_r * 0.42, n=10), -3.0)
                canvas.fill_output(pupil.astype(np.float32), np.array([12, 10, 10]))
                canvas.fill(_ellipse(ix + 0.7, iy - 0.8, 0.6, 0.6, n=6), np.array([250, 250, 250]), depth=-3)
        canvas.line(upper, skin * 0.3, 0.9, depth=-3)
        canvas.line(upper + np.array([0, -p.eye_h * 0.45 - 1.2]), skin * 0.72, 0.45, depth=-3)

        # Brow: an arched stroke whose thickness tapers outwards.
        inner_x = cx - sign * (p.brow_len * 0.42)
        t = np.linspace(0, 1, 10)
        bx = inner_x + sign * t * p.brow_len
        by = (cy - p.brow_gap - brow_raise * 1.2 - p.brow_arch * np.sin(np.pi * np.clip(t * 1.3, 0, 1))
              - p.brow_tilt * t + (1 - t) * 0.5)
        thick = p.brow_thick * (1 - 0.55 * t)
        brow = np.concatenate([np.stack([bx, by - thick / 2], 1), np.stack([bx, by + thick / 2], 1)[::-1]])
        canvas.fill(brow, np.clip(hair * 0.85 + skin * 0.15, 0, 255) * 0.9, depth=-1)

    # Nose: side shading, tip, nostrils.
    nose_top = p.eye_y + 4
    for sign in (-1, 1):
        side = np.array([[CENTRE_X + sign * 3.5, nose_top], [CENTRE_X + sign * 4.5, p.nose_y - 6],
                         [CENTRE_X + sign * (p.nose_w - 0.5), p.nose_y + 1]])
        canvas.line(side, skin * 0.8, 0.7, depth=6)
        canvas.fill(_ellipse(CENTRE_X + sign * (p.nose_w - 2.2), p.nose_y + 1.2, 2.6, 1.4, n=10,
                             angle=sign * 0.35), skin * 0.35, depth=9)
    canvas.blend(_ellipse(CENTRE_X, p.nose_y + 2.5, p.nose_w + 1, 2.5, n=12), skin * 0.6, 0.45, blur=1.0, depth=8)
    canvas.blend(_ellipse(CENTRE_X, p.nose_y - 1, p.nose_tip, p.nose_tip * 0.8, n=12), skin * 1.12, 0.7,
                 blur=1.0, depth=14)
    canvas.blend(np.array([[CENTRE_X - 1.2, nose_top], [CENTRE_X + 1.2, nose_top], [CENTRE_X + 1.0, p.nose_y - 4],
                           [CENTRE_X - 1.0, p.nose_y - 4]]), skin * 1.12, 0.5, blur=0.8, depth=10)

    # Mouth, with smile and opening.
    mouth_half = p.mouth_half * (1 + 0.12 * smile)
    corner_lift = -3.2 * smile
    xs = np.linspace(-1, 1, 17)
    bulge = np.sqrt(np.clip(1 - xs**2, 0, 1))
    line_y = p.mouth_y + corner_lift * xs**2 + 1.0 * smile * bulge
    gap = 5.5 * mouth_open * bulge
    mx = CENTRE_X + xs * mouth_half
    bow = 1 - 0.35 * np.exp(-((xs / 0.16) ** 2))
    upper_top = line_y - gap / 2 - p.lip_upper * bulge**0.6 * bow
    lower_bottom = line_y + gap / 2 + p.lip_lower * bulge**0.7
    lip_colour = np.clip(p.lip * (1 + rng.normal(0, 0.04, 3)), 0, 255)
    if mouth_open > 0.05:
        canvas.fill(np.concatenate([np.stack([mx, line_y - gap / 2], 1), np.stack([mx, line_y + gap / 2], 1)[::-1]]),
                    np.array([60, 22, 26]), depth=3)
        teeth = np.stack([mx, line_y - gap / 2 + np.minimum(gap, 2.4 * bulge)], 1)
        canvas.fill(np.concatenate([np.stack([mx, line_y - gap / 2], 1), teeth[::-1]])[1:-1],
                    np.array([232, 226, 212]), depth=3)
    canvas.fill(np.concatenate([np.stack([mx, upper_top], 1), np.stack([mx, line_y - gap / 2], 1)[::-1]]),
                lip_colour * 0.92, depth=3)
    canvas.fill(np.concatenate([np.stack([mx, line_y + gap / 2], 1), np.stack([mx, lower_bottom], 1)[::-1]]),
                lip_colour, depth=3)
    canvas.line(np.stack([mx, line_y - gap / 2], 1), lip_colour * 0.45, 0.5, depth=3)
    chin_shadow = _ellipse(CENTRE_X, (p.mouth_y + p.chin_y) / 2 + 2, 6, 2.2, n=10)
    canvas.blend(chin_shadow, skin * 0.8, 0.35, blur=1.5)

    _draw_facial_hair(canvas, p, hair, mx, upper_top, lower_bottom)
    for x, y, r in p.moles:
        canvas.fill(_ellipse(x, y, r, r, n=8), skin * 0.42)
    if p.freckles:
        spots = np.random.default_rng([int(p.skin[0] * 1000), 7]).uniform(-1, 1, (18, 2))
        for dx, dy in spots:
            sign = 1 if dx > 0 else -1
            canvas.fill(_ellipse(CENTRE_X + sign * (p.eye_half + 2) + dx * 8, p.nose_y - 2 + dy * 5, 0.6, 0.6, n=6),
                        skin * 0.75)
    if p.glasses:
        _draw_glasses(canvas, p)

    left_corner = (mx[0], line_y[0])
    right_corner = (mx[-1], line_y[-1])
    return np.array([eye_centres[0], eye_centres[1], (CENTRE_X, p.nose_y), left_corner, right_corner])


def _draw_hair(canvas: _Canvas, p: _Identity, hair: np.ndarray) -> None:
    if p.hair_style == "bald":
        canvas.blend(_ellipse(CENTRE_X, p.top_y + 14, p.face_hw * 0.6, 8, n=12), p.skin * 1.1, 0.4, blur=3)
        return
    xs = np.linspace(-1, 1, 21)
    hw = p.face_hw + 2.5
    line = p.hairline_y - p.hairline_curve * xs**2 * (1 - 0.7 * xs**2)
    if p.hair_style == "fringe":
        line = p.hairline_y + 12 + 4 * (1 - xs**2) - 2.5 * np.abs(np.sin(xs * 9 + p.parting))
    elif p.hair_style == "side":
        line = line + 6 * np.clip((xs * 14 - p.parting) / 14, -1, 1) * np.sign(p.parting)
    # Hair sides come down the temples to about eye level.
    side_y = p.eye_y - 6 if p.hair_style in ("long", "bun") else p.eye_y - 12
    right_side = np.array([[CENTRE_X + hw, side_y], [CENTRE_X + hw - 4, side_y]])
    cap = _ellipse(CENTRE_X, p.cheek_y, hw + 1.5, p.cheek_y - p.top_y + 4, math.pi, 2 * math.pi, 24)
    inner = np.stack([CENTRE_X + xs * (hw - 5), line], 1)[::-1]
    polygon = np.concatenate([cap[cap[:, 1] <= side_y + 1], right_side, inner, _mirror(right_side)[::-1]])
    canvas.fill(polygon, hair, depth=-4)
    # A soft sheen so hair reads as hair, not as a hat.
    canvas.blend(_ellipse(CENTRE_X + p.parting * 0.4, (p.top_y + p.hairline_y) / 2 + 2, hw * 0.45, 5, n=12),
                 hair * 1.35 + 18, 0.35, blur=3, depth=-4)


def _draw_facial_hair(canvas: _Canvas, p: _Identity, hair: np.ndarray, mx: np.ndarray, upper_top: np.ndarray,
                      lower_bottom: np.ndarray) -> None:
    """Stubble, goatee or full beard, and a moustache: lower-face identity cues.

    Beards follow the jaw line (a band between the face outline and the outline shrunk towards
    the mouth) rather than ending in a straight line across the cheeks, which would look like
    the top edge of a face mask and teach the model the wrong thing.
    """
    beard_colour = np.clip(hair * 0.9 + 8, 0, 255)
    if p.beard in (1, 3):
        jaw = _face_outline(p)
        jaw = jaw[jaw[:, 1] > (p.nose_y + 4 if p.beard == 1 else p.eye_y + 8)]  # right cheek -> chin -> left
        focus = np.array([CENTRE_X, p.mouth_y - 10])
        inner = focus + (jaw[::-1] - focus) * (0.8 if p.beard == 1 else 0.7)
        band = np.concatenate([jaw, inner])
        if p.beard == 1:  # stubble: a translucent shadow
            canvas.blend(band, beard_colour, 0.3, blur=1.0)
        else:
            canvas.fill(band, beard_colour)
            canvas.fill(np.concatenate([_ellipse(CENTRE_X, lower_bottom[8] + 1, 10, 3, 0, math.pi, 8)[::-1],
                                        _ellipse(CENTRE_X, lower_bottom[8] + 1, 12, p.chin_y - lower_bottom[8] - 3,
                                                 0, math.pi, 12)]), beard_colour)
    elif p.beard == 2:  # goatee
        canvas.fill(np.concatenate([_ellipse(CENTRE_X, lower_bottom[8] + 1, 9, 3, 0, math.pi, 8)[::-1],
                                    _ellipse(CENTRE_X, lower_bottom[8] + 2, 8, p.chin_y - lower_bottom[8] - 2,
                                             0, math.pi, 12)]), beard_colour)
    if p.moustache:
        top = np.stack([mx, upper_top - 3.2], 1)[2:-2]
        canvas.fill(np.concatenate([top, np.stack([mx, upper_top + 0.4], 1)[::-1]]), beard_colour)


def _draw_glasses(canvas: _Canvas, p: _Identity) -> None:
    colour = p.glasses_colour
    for sign in (-1, 1):
        cx, cy = CENTRE_X + sign * p.eye_half, p.eye_y + 0.5
        if p.glasses == 1:
            rim = _ellipse(cx, cy, p.eye_w + 4.5, p.eye_w + 3.5, n=24)
        else:
            w, h = p.eye_w + 5.5, p.eye_h + 4.5
            rim = np.array([[cx - w, cy - h], [cx + w, cy - h], [cx + w, cy + h - 1], [cx + w - 2, cy + h],
                            [cx - w + 2, cy + h], [cx - w, cy + h - 1]])
        canvas.blend(rim, np.array([200, 220, 235]), 0.12, depth=2)
        canvas.line(rim, colour, 0.9, depth=2, closed=True)
        outer = rim[np.argmax(sign * rim[:, 0])]
        canvas.line(np.array([outer, [CENTRE_X + sign * (p.face_hw + 2), cy - 2]]), colour, 0.8, depth=-4)
    canvas.line(np.array([[CENTRE_X - p.eye_half + p.eye_w + 3, p.eye_y - 1], [CENTRE_X, p.eye_y - 2.5],
                          [CENTRE_X + p.eye_half - p.eye_w - 3, p.eye_y - 1]]), colour, 0.8, depth=4)


def _finish(image2x: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Downsample, then camera effects: lighting, colour cast, contrast, blur, noise."""
    image = cv2.resize(image2x, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    ramp = np.linspace(-1, 1, size, dtype=np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    light = 1 + rng.uniform(0, 0.35) * (math.cos(angle) * ramp[None, :] + math.sin(angle) * ramp[:, None])
    gain = rng.uniform(0.7, 1.2) * (1 + rng.normal(0, 0.05, 3))
    image = image * light[..., None] * gain.astype(np.float32)
    contrast = rng.uniform(0.75, 1.2)
    image = (image - image.mean()) * contrast + image.mean()
    sigma = rng.uniform(0, 0.7) * size / 64
    if sigma > 0.25:
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    image += rng.normal(0, rng.uniform(0, 6), image.shape).astype(np.float32)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)
