"""Synthetic face masks fitted to facial landmarks: the exact (masked, clean, occlusion) pairs.

MEER learns to separate the mask from the identity and to restore the covered face, which
needs training triples nobody can photograph: the same face with and without a mask, and
the exact pixels the mask covers. :class:`MaskRenderer` draws a surgical, N95/KN95 or cloth
mask onto an aligned face from its 5 landmarks (and, if available, a 68-point jaw line) and
returns the masked face, the occlusion map and the mask-type class.

The occlusion rule, which the generator's composite relies on:
``occlusion[y, x] == 1`` wherever the mask (body, ear loops, straps, valve) has non-zero
coverage of the pixel, antialiased border pixels included; every pixel with
``occlusion == 0`` is bit-identical to the input. (A covered pixel may still keep its value
by coincidence, e.g. a black mask on a black background.)

Coordinates: a face frame with ``u`` along the eye line in units of the inter-ocular
distance (0 = the eyes' midpoint) and ``v`` perpendicular to it, downwards, in units of the
eye-to-mouth distance (0 = eye line, 1 = mouth line). Mask outlines are curves ``top(u)`` and
``bottom(u)`` in that frame; head yaw moves the mask's centre line with the nose and its
sides the other way, as a rotating head does.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import cv2
import numpy as np

MASK_TYPES = ("none", "surgical", "n95", "cloth")
# The mask classifier's classes: the kinds drawn here, plus real masks photographed on people
# (rows of a cache flagged ``masked``, see meer.data.prepare), which have no clean twin.
MASK_CLASSES = (*MASK_TYPES, "real")
REAL_MASK = MASK_CLASSES.index("real")

# Average aligned-face proportions, in face-frame units (ArcFace template and typical faces).
FACE_HALF_WIDTH = 1.38  # half the cheek-to-cheek width at the nose, in inter-ocular distances
CHIN = 1.55  # eye-to-chin over eye-to-mouth
SHIFT = 4  # fixed-point bits for sub-pixel polygon vertices
SAMPLES = 41  # points per outline curve

# Dense landmark layouts, by point count: indices of the face's left and right side at cheek
# height, the chin, and the nose bridge just below the eyes (where a mask's top edge rests).
DENSE_LAYOUTS = {
    68: (1, 15, 8, 28),  # iBUG 300-W / dlib
    468: (234, 454, 152, 197),  # MediaPipe face mesh
    478: (234, 454, 152, 197),  # MediaPipe face mesh with iris points
}

SURGICAL_COLOURS = np.array(
    [(142, 194, 222), (236, 238, 240), (150, 210, 190), (38, 40, 44), (238, 172, 192), (182, 172, 222), (186, 190, 196)],
    np.float32,
)
SURGICAL_WEIGHTS = np.array([0.38, 0.2, 0.1, 0.13, 0.07, 0.05, 0.07])
N95_COLOURS = np.array([(240, 239, 234), (232, 226, 210), (166, 168, 172), (40, 40, 44), (190, 214, 232)], np.float32)
N95_WEIGHTS = np.array([0.52, 0.15, 0.1, 0.17, 0.06])


@dataclass
class MaskRender:
    """One masked face.

    masked:    uint8 [H, W, 3], the input with the mask drawn on it
    occlusion: uint8 [H, W], 1 where the mask touches a pixel (see the module docstring), else 0
    mask_type: index into :data:`MASK_TYPES` (0 only if the mask fell entirely off the image)
    """

    masked: np.ndarray
    occlusion: np.ndarray
    mask_type: int


@dataclass(frozen=True)
class FaceGeometry:
    """The face frame estimated from landmarks (see the module docstring for the units).

    edge_shift / centre_shift: how far (in ``u`` units) head yaw moves the face's sides and
    its centre line; ``half_width``, ``chin`` and ``bridge`` are measured from a dense jaw line
    when one is given, else average proportions (``bridge`` is None then).
    """

    origin: np.ndarray  # [2] eyes' midpoint, pixels
    ex: np.ndarray  # [2] unit vector along the eye line
    ey: np.ndarray  # [2] unit vector down the face
    iod: float  # inter-ocular distance, pixels
    eye_to_mouth: float  # pixels
    edge_shift: float
    centre_shift: float
    half_width: float = FACE_HALF_WIDTH
    chin: float = CHIN
    bridge: float | None = None

    @classmethod
    def from_landmarks(cls, landmarks5: np.ndarray, dense: np.ndarray | None = None) -> FaceGeometry:
        """From 5 points [5, 2] (eyes, nose tip, mouth corners) and optionally dense points
        [K, 2] in one of the :data:`DENSE_LAYOUTS` (68 iBUG, 468/478 MediaPipe mesh)."""
        points = np.asarray(landmarks5, np.float64)
        if points.shape != (5, 2):
            raise ValueError(f"landmarks5 must be [5, 2], got {points.shape}")
        left_eye, right_eye, nose, mouth = points[0], points[1], points[2], points[3:].mean(axis=0)
        origin = (left_eye + right_eye) / 2
        iod = float(np.linalg.norm(right_eye - left_eye))
        if iod < 1e-3:
            raise ValueError("the two eye landmarks coincide")
        ex = (right_eye - left_eye) / iod
        ey = np.array([-ex[1], ex[0]])
        eye_to_mouth = max(float((mouth - origin) @ ey), 0.5 * iod)  # guards bad detections
        # Depth model: eyes at 0.5, mask front at ~0.85, nose tip at 1, face sides at 0 (head
        # radii). Relative to the eyes, a point at depth z moves by (z - 0.5) * s under yaw, and
        # the mouth (z ~ 0.8) moves 0.6 as far as the nose: two measurements of s / 2.
        nose_u = float((nose - origin) @ ex) / iod
        mouth_u = float((mouth - origin) @ ex) / iod
        offset = float(np.clip((nose_u + mouth_u / 0.6) / 2, -0.45, 0.45))
        geometry = dict(origin=origin, ex=ex, ey=ey, iod=iod, eye_to_mouth=eye_to_mouth,
                        edge_shift=-offset, centre_shift=0.7 * offset)
        if dense is not None:
            dense = np.asarray(dense, np.float64)
            if dense.ndim != 2 or dense.shape[1] != 2 or len(dense) not in DENSE_LAYOUTS:
                raise ValueError(f"dense_landmarks must be [K, 2] with K in {sorted(DENSE_LAYOUTS)}, got {dense.shape}")
            left, right, chin, bridge = DENSE_LAYOUTS[len(dense)]
            rel = dense - origin
            u, v = rel @ ex / iod, rel @ ey / eye_to_mouth
            geometry.update(half_width=float(u[right] - u[left]) / 2, edge_shift=float(u[right] + u[left]) / 2,
                            chin=float(v[chin]), bridge=float(v[bridge]))
        return cls(**geometry)

    def yaw_shift(self, u: np.ndarray, half_width: float) -> np.ndarray:
        """Horizontal shift of mask points at intrinsic ``u`` (a surface bulging to the nose)."""
        bulge = np.sqrt(np.clip(1 - (u / half_width) ** 2, 0, 1))
        return self.edge_shift + (self.centre_shift - self.edge_shift) * bulge

    def to_image(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Face frame -> pixel coordinates [N, 2]."""
        return (self.origin + np.multiply.outer(u * self.iod, self.ex)
                + np.multiply.outer(v * self.eye_to_mouth, self.ey))


@dataclass
class _Shape:
    """A mask outline in the face frame: ``top`` and ``bottom`` [SAMPLES] over ``u``."""

    u: np.ndarray
    top: np.ndarray
    bottom: np.ndarray
    half_width: float
    style: str  # surgical | cup | kn95 | flat | contoured


class MaskRenderer:
    """Draws a random mask of one of ``types`` onto an aligned face.

    Args:
        types: mask kinds to draw, from ``MASK_TYPES[1:]``.
        weights: relative frequency of each type (uniform by default).
        jitter: scales the random variation of coverage (0 = every mask sits the same way).
        nose_out_prob: share of masks worn under the nose.
        chin_out_prob: share of masks worn above the chin.
        valve_prob: share of N95 masks with an exhalation valve.
    """

    def __init__(
        self,
        types: tuple[str, ...] = ("surgical", "n95", "cloth"),
        weights: tuple[float, ...] | None = None,
        jitter: float = 1.0,
        nose_out_prob: float = 0.08,
        chin_out_prob: float = 0.1,
        valve_prob: float = 0.25,
    ) -> None:
        unknown = [t for t in types if t not in MASK_TYPES[1:]]
        if not types or unknown:
            raise ValueError(f"mask types must be a non-empty subset of {MASK_TYPES[1:]}, got {types}")
        if weights is not None and (len(weights) != len(types) or min(weights) < 0 or sum(weights) <= 0):
            raise ValueError("weights must give one non-negative number per type, not all zero")
        self.types = tuple(types)
        probabilities = np.ones(len(types)) if weights is None else np.asarray(weights, np.float64)
        self.probabilities = probabilities / probabilities.sum()
        self.jitter = jitter
        self.nose_out_prob = nose_out_prob
        self.chin_out_prob = chin_out_prob
        self.valve_prob = valve_prob

    def __call__(
        self,
        image: np.ndarray,
        landmarks5: np.ndarray,
        rng: np.random.Generator,
        dense_landmarks: np.ndarray | None = None,
    ) -> MaskRender:
        """Mask ``image`` (uint8 [H, W, 3] RGB) of the face with landmarks [5, 2].

        ``dense_landmarks`` [K, 2] (68 iBUG or MediaPipe mesh points, see :data:`DENSE_LAYOUTS`)
        replace the 5-point estimates of face width, face centre line, chin and nose bridge.
        The result depends only on the inputs and the state of ``rng``.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
        geometry = FaceGeometry.from_landmarks(landmarks5, dense_landmarks)
        kind = self.types[rng.choice(len(self.types), p=self.probabilities)]
        shape = self._shape(kind, geometry, rng)
        return _render(image, geometry, shape, kind, rng, self.valve_prob)

    def _shape(self, kind: str, g: FaceGeometry, rng: np.random.Generator) -> _Shape:
        j = self.jitter

        def jit(scale: float) -> float:
            return float(rng.normal(0, scale * j))

        if kind == "n95":
            style = "cup" if rng.random() < 0.45 else "kn95"
        elif kind == "cloth":
            style = "flat" if rng.random() < 0.4 else "contoured"
        else:
            style = "surgical"
        half_width = g.half_width * (1.0 if style == "surgical" else 0.95) * (1 + jit(0.04))
        bridge = g.bridge + 0.05 if g.bridge is not None else 0.27
        top_centre = bridge + jit(0.05) - (0.04 if style in ("cup", "kn95") else 0.0)
        top_side = top_centre + 0.2 + jit(0.04)
        if rng.random() < self.nose_out_prob:  # worn under the nose
            top_centre, top_side = 0.62 + jit(0.03), 0.66 + jit(0.03)
        bottom_centre = g.chin + 0.1 + jit(0.04)
        if top_centre < 0.5 and rng.random() < self.chin_out_prob:  # chin uncovered (never with the nose)
            bottom_centre = 1.2 + jit(0.04)
        jaw = min(bottom_centre - 0.1, 0.98 + jit(0.05))  # height where the side meets the jaw

        u = np.linspace(-half_width, half_width, SAMPLES)
        x = np.abs(u) / half_width
        if style in ("kn95", "contoured"):
            # A folded mask: straight-ish panels meeting at a point over the nose and the chin.
            power = 1.15 if style == "kn95" else 1.5
            top = top_centre + (top_side + 0.08 - top_centre) * x**power
            bottom = bottom_centre - (bottom_centre - jaw) * x ** (power + 0.3)
        else:
            # Fabric tents over the nose, then runs flat to the cheeks; the chin edge is round.
            rise = np.clip(x / (0.5 if style == "surgical" else 0.75), 0, 1)
            top = top_centre + (top_side - top_centre) * (1 - (1 - rise) ** 2)
            power = 2.0 if style == "cup" else 2.6
            bottom = jaw + (bottom_centre - jaw) * (1 - x**power) ** (1 / power)
        return _Shape(u, top, np.maximum(bottom, top + 0.3), half_width, style)


def _render(image: np.ndarray, g: FaceGeometry, shape: _Shape, kind: str, rng: np.random.Generator,
            valve_prob: float) -> MaskRender:
    height, width = image.shape[:2]
    masked = image.copy()
    occlusion = np.zeros((height, width), np.uint8)

    # Outline and straps in pixels.
    u_img = shape.u + g.yaw_shift(shape.u, shape.half_width)
    outline = np.concatenate([g.to_image(u_img, shape.top), g.to_image(u_img[::-1], shape.bottom[::-1])])
    straps, strap_width = _straps(g, shape, u_img)
    points = np.concatenate([outline, *straps])
    pad = 2 + strap_width
    x0, y0 = np.maximum(np.floor(points.min(axis=0)).astype(int) - pad, 0)
    x1, y1 = np.minimum(np.ceil(points.max(axis=0)).astype(int) + pad + 1, (width, height))
    if x1 <= x0 or y1 <= y0:
        return MaskRender(masked, occlusion, 0)
    box_h, box_w = y1 - y0, x1 - x0
    corner = np.array([x0, y0], np.float64)

    def fixed(p: np.ndarray) -> np.ndarray:
        return np.round((p - corner) * (1 << SHIFT)).astype(np.int32)

    body = np.zeros((box_h, box_w), np.uint8)
    cv2.fillPoly(body, [fixed(outline)], 255, cv2.LINE_AA, SHIFT)
    band = np.zeros((box_h, box_w), np.uint8)
    for strap in straps:
        cv2.polylines(band, [fixed(strap)], False, 255, strap_width, cv2.LINE_AA, SHIFT)
    # Straps run behind the mask body: only their visible part counts.
    band = np.minimum(band, 255 - body)
    cover = (body > 0) | (band > 0)
    if not cover.any():
        return MaskRender(masked, occlusion, 0)

    # Face-frame coordinates of every pixel in the box, with the yaw undone (two fixed-point
    # steps), and the relative height t in [0, 1] between the top and bottom edges.
    # (a row and a column, broadcast: the same arithmetic per pixel as full grids, at a fraction of the cost)
    rel_x = np.arange(x0, x1, dtype=np.float32)[None, :] - g.origin[0]
    rel_y = np.arange(y0, y1, dtype=np.float32)[:, None] - g.origin[1]
    u_seen = (rel_x * g.ex[0] + rel_y * g.ex[1]) / g.iod
    v = (rel_x * g.ey[0] + rel_y * g.ey[1]) / g.eye_to_mouth
    u = u_seen - g.yaw_shift(u_seen, shape.half_width)
    u = u_seen - g.yaw_shift(u, shape.half_width)
    top = np.interp(u, shape.u, shape.top)
    t = np.clip((v - top) / (np.interp(u, shape.u, shape.bottom) - top), 0, 1).astype(np.float32)
    x = np.clip(u / shape.half_width, -1, 1).astype(np.float32)

    region = image[y0:y1, x0:x1].astype(np.float32)
    texture = _texture(kind, shape.style, u.astype(np.float32), v, x, t, g, rng)
    texture *= _shading(shape.style, x, t, region, rng)[..., None]
    # Photos are never as crisp as a procedural texture: soften it to a camera-like blur.
    texture = cv2.GaussianBlur(texture, (0, 0), rng.uniform(0.35, 0.9) * max(g.iod / 35.0, 0.5))

    # Details drawn over the body: an N95 valve.
    if kind == "n95" and rng.random() < valve_prob:
        _valve(texture, body, g, shape, corner, rng)

    strap_colour = _strap_colour(kind, texture, rng)
    alpha = body.astype(np.float32)[..., None] / 255
    strap_alpha = band.astype(np.float32)[..., None] / 255
    out = region + strap_alpha * (strap_colour - region)
    out = out + alpha * (np.clip(texture, 0, 255) - out)
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    np.copyto(masked[y0:y1, x0:x1], out, where=cover[..., None])
    occlusion[y0:y1, x0:x1] = cover
    return MaskRender(masked, occlusion, MASK_TYPES.index(kind))


def _straps(g: FaceGeometry, shape: _Shape, u_img: np.ndarray) -> tuple[list[np.ndarray], int]:
    """Ear loops (surgical, cloth) or head bands (N95) as pixel polylines, and their width."""
    w = shape.half_width
    lines = []
    for side in (0, -1):
        sign = 1.0 if side == -1 else -1.0
        edge = u_img[side]
        ear = sign * (w + 0.22) + g.edge_shift
        if shape.style in ("cup", "kn95"):
            # Elastic head bands leave the mask sides almost horizontally.
            for v_from, v_to in ((shape.top[side] + 0.25, shape.top[side] + 0.1), (1.05, 1.0)):
                reach = sign * (w + 0.45) + g.edge_shift
                lines.append(g.to_image(np.array([edge - sign * 0.04, reach]), np.array([v_from, v_to])))
        else:
            # Ear loops run from the mask's corners to the ear and disappear behind it.
            top_corner = np.array([edge, shape.top[side] + 0.03])
            low_corner = np.array([edge - sign * 0.03, min(shape.bottom[side], 1.15) - 0.05])
            for corner, ear_v in ((top_corner, 0.25), (low_corner, 0.5)):
                lines.append(g.to_image(np.array([corner[0], ear]), np.array([corner[1], ear_v])))
    width = max(1, round(g.iod * (0.07 if shape.style in ("cup", "kn95") else 0.045)))
    return lines, width


def _texture(kind: str, style: str, u: np.ndarray, v: np.ndarray, x: np.ndarray, t: np.ndarray,
             g: FaceGeometry, rng: np.random.Generator) -> np.ndarray:
    """Base colour and material pattern, float [h, w, 3] in 0..255 (before shading)."""
    if kind == "surgical":
        colour = _pick(SURGICAL_COLOURS, SURGICAL_WEIGHTS, rng)
        # Three pleats: a dark fold line with a lit band just above it.
        relief = np.zeros_like(t)
        for centre in np.array([0.3, 0.5, 0.7]) + rng.normal(0, 0.025, 3):
            relief += 0.16 * np.exp(-(((t - centre + 0.04) / 0.035) ** 2))
            relief -= 0.28 * np.exp(-(((t - centre) / 0.02) ** 2))
        # Edge binding: a folded-over band along all four sides, with a stitch line inside.
        band_t = 0.07
        edge = np.minimum(np.minimum(t, 1 - t) / band_t, (1 - np.abs(x)) * 1.3 / band_t)
        relief += np.where(edge < 1, 0.05, 0.0) - 0.12 * np.exp(-(((edge - 1) / 0.12) ** 2))
        # The nose wire: a thin ridge under the top binding.
        relief += 0.08 * np.exp(-(((t - 0.035) / 0.02) ** 2)) * (np.abs(x) < 0.3)
        grain = rng.normal(0, 0.025, t.shape).astype(np.float32)
        return colour * (1 + relief + grain)[..., None]
    if kind == "n95":
        colour = _pick(N95_COLOURS, N95_WEIGHTS, rng)
        grain = cv2.GaussianBlur(rng.normal(0, 0.06, t.shape).astype(np.float32), (0, 0), 1.0)
        relief = grain
        if style == "kn95":
            relief -= 0.3 * np.exp(-((u / 0.025) ** 2))  # the central welded seam
            relief += 0.06 * np.sign(u) * rng.choice((-1, 1))  # two panels catch light differently
        # The welded rim: a band along the edge with embossed dots.
        rim = np.minimum(np.minimum(t, 1 - t) / 0.06, (1 - np.abs(x)) / 0.05)
        dots = 0.5 + 0.5 * np.cos(2 * np.pi * (u + v) * 9)
        relief += np.where(rim < 1, -0.05 - 0.08 * dots, 0.0)
        return colour * (1 + relief)[..., None]
    return _cloth(u, v, t, style, rng)


def _cloth(u: np.ndarray, v: np.ndarray, t: np.ndarray, style: str, rng: np.random.Generator) -> np.ndarray:
    """A fabric: a solid colour or a print (stripes, dots, checks, floral), with a weave."""
    hue = rng.random()
    base = _hsv(hue, rng.uniform(0.15, 0.85), rng.uniform(0.12, 0.92))
    accent = _hsv((hue + rng.uniform(0.25, 0.75)) % 1, rng.uniform(0.0, 0.8), rng.uniform(0.2, 1.0))
    # Print coordinates: the face frame scaled so the print has a fixed size on the face.
    px, py = u * 2.2, v * 1.6
    pattern = rng.choice(["solid", "stripes", "dots", "checks", "floral", "camo"], p=[0.3, 0.16, 0.14, 0.14, 0.16, 0.1])
    if pattern == "solid":
        mix = np.zeros_like(t)
    elif pattern == "stripes":
        angle = rng.choice([0.0, math.pi / 2, math.pi / 4, -math.pi / 4])
        period = rng.uniform(0.12, 0.35)
        wave = np.sin(2 * np.pi * (px * math.cos(angle) + py * math.sin(angle)) / period)
        mix = np.clip(wave * 3 + rng.uniform(-1.5, 1.5), 0, 1)
    elif pattern == "dots":
        cell = rng.uniform(0.1, 0.22)
        gx, gy = px / cell, py / cell
        gx = gx + 0.5 * (np.floor(gy) % 2)  # staggered rows
        dist = np.hypot(gx - np.floor(gx) - 0.5, gy - np.floor(gy) - 0.5)
        mix = np.clip((rng.uniform(0.18, 0.32) - dist) * 8, 0, 1)
    elif pattern == "checks":
        period = rng.uniform(0.12, 0.3)
        a = 0.5 + 0.5 * np.clip(np.sin(2 * np.pi * px / period) * 4, -1, 1)
        b = 0.5 + 0.5 * np.clip(np.sin(2 * np.pi * py / period) * 4, -1, 1)
        mix = 0.5 * (a + b) if rng.random() < 0.5 else np.abs(a - b)  # gingham or checkerboard
    else:
        # Blobs from smooth noise: floral (small, sparse) or camouflage (large, three tones).
        cells = 5 if pattern == "camo" else 11
        noise = cv2.resize(rng.random((cells, cells)).astype(np.float32), t.shape[::-1], interpolation=cv2.INTER_CUBIC)
        level = 0.5 if pattern == "camo" else 0.68
        mix = np.clip((noise - level) * 12, 0, 1)
        if pattern == "floral":
            centres = np.clip((noise - level - 0.08) * 20, 0, 1)
            mix = mix - 0.6 * centres
    fabric = base + mix[..., None] * (accent - base)
    # Weave: a fine cross-hatch plus grain, and a centre seam on contoured masks.
    weave = 0.03 * np.sin(px * 140) * np.sin(py * 140) + rng.normal(0, 0.015, t.shape).astype(np.float32)
    if style == "contoured":
        weave -= 0.22 * np.exp(-((u / 0.025) ** 2))
    return fabric * (1 + weave)[..., None]


def _shading(style: str, x: np.ndarray, t: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative shading [h, w] that makes a flat texture sit on a curved face in the
    photo's light: sides turn away from the camera, the part under the chin faces down, the
    fabric dips under the top edge, and the photo's brightness and light direction carry over.
    """
    luminance = region[..., 1]  # green is a good enough proxy for brightness here
    half = luminance.shape[1] // 2
    left, right = float(luminance[:, :half].mean()), float(luminance[:, half:].mean())
    slope = float(np.clip((right - left) / (right + left + 1.0) * 1.5, -0.3, 0.3))
    exposure = float(np.clip(0.62 + 0.4 * (left + right) / 2 / 150, 0.7, 1.05)) * (1 + rng.normal(0, 0.03))
    side = 1 - 0.4 * x**2 if style != "cup" else 1 - 0.35 * (x**2 + ((t - 0.5) * 1.6) ** 2)
    # Slack fabric: gentle, random, low-frequency undulation of the light.
    slack = cv2.resize(rng.normal(0, 0.05, (3, 4)).astype(np.float32), x.shape[::-1], interpolation=cv2.INTER_CUBIC)
    under_chin = 1 - 0.25 * np.clip((t - 0.6) / 0.4, 0, 1) ** 2
    top_shadow = 1 - 0.12 * np.exp(-t / 0.06)
    ridge = 1 + 0.08 * np.exp(-((x / 0.25) ** 2)) * (1 - t)
    return exposure * (1 + slope * x + slack) * side * under_chin * top_shadow * ridge


def _valve(texture: np.ndarray, body: np.ndarray, g: FaceGeometry, shape: _Shape, corner: np.ndarray,
           rng: np.random.Generator) -> None:
    """Paint an exhalation valve (a disc with a ring and slots) into ``texture`` in place."""
    sign = rng.choice((-1.0, 1.0))
    u = sign * 0.42 * shape.half_width
    v = float(np.interp(u, shape.u, shape.top) + 0.55 * (np.interp(u, shape.u, shape.bottom)
                                                         - np.interp(u, shape.u, shape.top)))
    centre = g.to_image(np.array([u + float(g.yaw_shift(np.array(u), shape.half_width))]), np.array([v]))[0] - corner
    radius = 0.22 * g.iod
    colour = _pick(np.array([(70, 72, 76), (236, 236, 232), (214, 120, 52), (60, 100, 170)], np.float32),
                   np.array([0.45, 0.3, 0.15, 0.1]), rng)
    disc = np.zeros(body.shape, np.uint8)
    cv2.circle(disc, tuple(np.round(centre * 16).astype(int)), round(radius * 16), 255, -1, cv2.LINE_AA, SHIFT)
    ring = np.zeros(body.shape, np.uint8)
    cv2.circle(ring, tuple(np.round(centre * 16).astype(int)), round(radius * 0.62 * 16), 255, max(1, round(radius * 0.12)),
               cv2.LINE_AA, SHIFT)
    weight = (np.minimum(disc, body).astype(np.float32) / 255)[..., None]
    ring_weight = (np.minimum(ring, disc).astype(np.float32) / 255)[..., None]
    texture += weight * (colour - texture)
    texture += ring_weight * (colour * 0.6 - texture)


def _strap_colour(kind: str, texture: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    def mean() -> np.ndarray:
        return texture.reshape(-1, 3).mean(axis=0)

    if kind == "cloth":
        return mean() * 0.85
    if kind == "surgical":
        return np.full(3, 232.0, np.float32) if rng.random() < 0.6 else mean() * 1.02
    return np.array([(238, 236, 230), (60, 110, 190), (230, 210, 90), (48, 48, 52)][rng.integers(4)], np.float32)


def _pick(palette: np.ndarray, weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    colour = palette[rng.choice(len(palette), p=weights / weights.sum())]
    return np.clip(colour * (1 + rng.normal(0, 0.04, 3)), 0, 255).astype(np.float32)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h, s, v), np.float32) * 255
