"""Procedural faces: identities, AU-driven geometry in face coordinates, and drawing with Pillow.

People (``sample_identity``, the one population of the video subjects and the face-identity set)
differ in the shape of every facial part at an anthropometric spread (``GEOMETRY``: a mean and a
coefficient of variation per measure, breadths and lengths correlated), in canthal tilt and small
left/right asymmetries, in marks of their own (a nasolabial fold at rest, moles, stubble, glasses,
brow density) and in colour (skin tones from ``SKIN_CLUSTERS``, hair, iris, lips). Every draw comes
from the person's own stream, in a fixed order.

Face coordinates: the face centre is (0, 0), y points down, the forehead top is at y = -1 and the
chin at y = +1 (one unit = half the face height). Every part is a polygon or polyline in these
coordinates with a depth (used for yaw) and a colour; ``draw_parts`` maps them to pixels with a
``Pose``. Each of the 12 labelled AUs moves or darkens its own region:

    AU1 inner brow up + central forehead lines     AU2 outer brow up + lateral forehead lines
    AU4 brows down/together + vertical furrows     AU6 cheeks raised/bright, crow's feet, lower lid up
    AU7 eye aperture narrowed, thick lower lid     AU10 upper lip up showing teeth, nasolabial folds
    AU12 mouth corners up and out                  AU15 mouth corners down + lines below them
    AU23 mouth narrower, thinner darker lips       AU24 lips pressed thin + crease above the chin
    AU25 lips apart (dark gap)                     AU26 chin and jaw lowered

    >>> from PIL import Image
    >>> from pipeline.data.synth.expressions import NUM_DRAWN
    >>> parts = face_parts(sample_identity(np.random.default_rng(0)), np.zeros(NUM_DRAWN))
    >>> img = Image.new("RGB", (128, 128)); draw_parts(ImageDraw.Draw(img), parts, Pose(64, 60, 40))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import ImageDraw

from pipeline.data.synth.expressions import AU_INDEX

Color = tuple[float, float, float]

# Skin tones come in population clusters (broadly: light, light olive, medium, brown, dark), each
# with its own spread, rather than one light-dark line: a colour alone then names few people.
SKIN_CLUSTERS = np.array([[236, 200, 176], [222, 184, 150], [192, 142, 106], [142, 98, 70], [96, 62, 44]], float)
SKIN_SHARES = np.array([0.30, 0.22, 0.20, 0.15, 0.13])
HAIR_COLORS = np.array([[30, 22, 18], [70, 45, 25], [120, 80, 40], [190, 160, 100], [140, 140, 140], [20, 20, 25]])
IRIS_COLORS = np.array([[60, 40, 25], [40, 70, 110], [70, 90, 50], [35, 25, 20]])   # brown, blue, green, dark
# Hair and iris colours go with the skin cluster (a row per cluster): blond hair and blue or green
# eyes are common only among the lightest; grey hair (age) is as common in every cluster.
HAIR_SHARES = np.array([[0.15, 0.30, 0.25, 0.18, 0.10, 0.02],
                        [0.30, 0.35, 0.15, 0.05, 0.10, 0.05],
                        [0.40, 0.35, 0.05, 0.02, 0.10, 0.08],
                        [0.45, 0.30, 0.02, 0.01, 0.10, 0.12],
                        [0.50, 0.25, 0.01, 0.01, 0.10, 0.13]])
IRIS_SHARES = np.array([[0.35, 0.40, 0.20, 0.05],
                        [0.60, 0.15, 0.15, 0.10],
                        [0.60, 0.03, 0.07, 0.30],
                        [0.50, 0.01, 0.02, 0.47],
                        [0.40, 0.00, 0.01, 0.59]])

# Facial measures (face units: half the face height of the mean face) as (mean, coefficient of
# variation across people). Where a published figure exists the CV is a little above the
# single-sex, single-population SDs of docs/pretrain.md's source, as this population mixes both.
GEOMETRY: dict[str, tuple[float, float]] = {
    "face_w": (0.77, 0.05),        # half bizygomatic width (zy-zy)
    "face_h": (1.00, 0.06),        # centre to chin (lower face height, sn-me, with the midface)
    "jaw_w": (0.60, 0.07),         # half bigonial width (go-go)
    "chin_w": (0.17, 0.15),        # half width of the chin's front (our choice)
    "eye_dx": (0.315, 0.06),       # half the distance between the eye centres (en-en, ex-ex)
    "eye_w": (0.1375, 0.09),       # half eye width (ex-en)
    "eye_h": (0.085, 0.12),        # upper lid opening (our choice)
    "brow_h": (0.15, 0.12),        # brow above the eye centre (our choice)
    "brow_arch": (0.05, 0.30),     # how far the brow's middle rises above its ends (our choice)
    "brow_thick": (0.0625, 0.15),  # (our choice)
    "nose_len": (0.42, 0.07),      # eye line to the nostrils (n-sn)
    "nose_w": (0.11, 0.09),        # half alar width (al-al)
    "philtrum": (0.265, 0.09),     # nostrils to the lip seam (upper lip height, sn-sto)
    "mouth_w": (0.245, 0.07),      # half mouth width (ch-ch)
    "lip_upper": (0.0575, 0.12),   # upper vermilion height (ls-sto)
    "lip_lower": (0.072, 0.10),    # lower vermilion height (sto-li)
}
# Measures that grow together: broad faces have wider jaws, noses and mouths; long faces longer
# noses and lips. SHARED is each member's share of variance from its group's common factor.
BREADTH = ("face_w", "jaw_w", "eye_dx", "nose_w", "mouth_w")
LENGTH = ("face_h", "nose_len", "philtrum")
SHARED = 0.4
CANTHAL_TILT_DEG = (4.0, 2.5)      # mean and SD: the outer eye corner sits a few degrees higher
ASYMMETRY_SD = {"eye_asym": 0.015, "brow_asym": 0.02, "mouth_asym": 0.015}   # left minus right height
BEARD_SHARE, GLASSES_SHARE = 0.3, 0.2


@dataclass(frozen=True)
class Identity:
    """Shape, colours and static marks of one person's face (lengths in face units)."""

    skin: Color
    hair: Color
    lip: Color
    iris: Color
    clothes: Color
    hair_style: int        # 0 short, 1 long, 2 fringe, 3 very short
    face_w: float
    face_h: float
    jaw_w: float
    chin_w: float
    eye_dx: float
    eye_y: float           # eye line below the face centre (negative: above)
    eye_w: float
    eye_h: float
    eye_tilt: float        # canthal tilt, degrees (outer corner up)
    brow_h: float
    brow_arch: float
    brow_thick: float
    brow_density: float    # 0 bare skin .. 1 full brow colour
    nose_len: float
    nose_w: float
    philtrum: float
    mouth_w: float
    lip_upper: float
    lip_lower: float
    eye_asym: float        # left/right height offsets (face units): + lowers the image-right side
    brow_asym: float
    mouth_asym: float
    rest_fold: float       # nasolabial fold depth at rest (AU10 at full strength is 1)
    moles: tuple[tuple[float, float, float], ...]   # (x, y, radius)
    beard: float           # stubble / beard shadow strength (0 none)
    glasses: int           # 0 none, 1 thin frame, 2 thick frame

    @property
    def brow_y(self) -> float:
        return self.eye_y - self.brow_h

    @property
    def nose_y(self) -> float:
        return self.eye_y + self.nose_len

    @property
    def mouth_y(self) -> float:
        return self.nose_y + self.philtrum

    def measures(self) -> dict[str, float]:
        """The ``GEOMETRY`` measures of this face."""
        return {name: getattr(self, name) for name in GEOMETRY}


@dataclass(frozen=True)
class Pose:
    """Where a face is drawn: centre (px), half face height (px), roll and yaw (degrees)."""

    cx: float
    cy: float
    scale: float
    roll: float = 0.0
    yaw: float = 0.0

    def project(self, pts: np.ndarray, depth: float | np.ndarray) -> np.ndarray:
        """Map (k, 2) face coordinates at ``depth`` (scalar or (k,)) to (k, 2) pixel coordinates."""
        yaw = math.radians(self.yaw)
        x = pts[:, 0] * math.cos(yaw) + depth * math.sin(yaw)
        y = pts[:, 1]
        c, s = math.cos(math.radians(self.roll)), math.sin(math.radians(self.roll))
        return np.stack([self.cx + self.scale * (c * x - s * y), self.cy + self.scale * (s * x + c * y)], axis=1)


@dataclass(frozen=True)
class Part:
    """One drawable shape."""

    points: np.ndarray     # (k, 2) face coordinates
    color: Color
    depth: float = 0.0
    width: float = 0.0     # > 0: a polyline this thick (face units); 0: a filled polygon


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw a person from ``rng`` alone: colours, facial measures, asymmetry and static marks.

    The draws come in a fixed order, so the same stream gives the same person.
    """
    cluster = int(rng.choice(len(SKIN_CLUSTERS), p=SKIN_SHARES))
    skin = np.clip(SKIN_CLUSTERS[cluster] * rng.normal(1.0, 0.05) + rng.normal(0.0, 5.0, 3), 0, 255)
    lip = np.clip(skin * np.array([0.85, 0.55, 0.55]) + np.array([25, 0, 5]), 0, 255)
    hair = _c(HAIR_COLORS[rng.choice(len(HAIR_COLORS), p=HAIR_SHARES[cluster])] + rng.uniform(-10, 10, 3))
    iris = _c(IRIS_COLORS[rng.choice(len(IRIS_COLORS), p=IRIS_SHARES[cluster])])
    clothes, hair_style = _c(rng.uniform(30, 220, 3)), int(rng.integers(4))
    geometry = _sample_geometry(rng)
    # a jaw never wider than the cheekbones, a chin never wider than the jaw
    geometry["jaw_w"] = min(geometry["jaw_w"], 0.95 * geometry["face_w"])
    geometry["chin_w"] = min(geometry["chin_w"], 0.6 * geometry["jaw_w"])
    eye_y = float(rng.uniform(-0.16, -0.09))
    tilt = float(np.clip(rng.normal(*CANTHAL_TILT_DEG), -4.0, 12.0))
    asym = {name: float(rng.normal(0.0, sd)) for name, sd in ASYMMETRY_SD.items()}
    brow_density = float(rng.uniform(0.5, 1.0))
    rest_fold = float(rng.uniform(0.05, 0.45))
    moles = tuple((float(rng.uniform(-0.55, 0.55) * geometry["face_w"]), float(rng.uniform(-0.7, 0.8)),
                   float(rng.uniform(0.01, 0.022))) for _ in range(min(int(rng.poisson(1.0)), 5)))
    beard = float(rng.uniform(0.2, 0.8)) if rng.random() < BEARD_SHARE else 0.0
    glasses = int(rng.integers(1, 3)) if rng.random() < GLASSES_SHARE else 0
    return Identity(
        skin=_c(skin), hair=hair, lip=_c(lip), iris=iris, clothes=clothes, hair_style=hair_style,
        eye_y=eye_y, eye_tilt=tilt, brow_density=brow_density, rest_fold=rest_fold, moles=moles,
        beard=beard, glasses=glasses, **geometry, **asym,
    )


def _sample_geometry(rng: np.random.Generator) -> dict[str, float]:
    """The ``GEOMETRY`` measures: mean x (1 + cv z), z a standard normal with the groups' shared
    factors, clipped at 2.5 SD (no grotesque faces)."""
    own = rng.standard_normal(len(GEOMETRY))
    breadth, length = rng.standard_normal(2)
    out = {}
    for k, (name, (mean, cv)) in enumerate(GEOMETRY.items()):
        common = breadth if name in BREADTH else length if name in LENGTH else None
        z = own[k] if common is None else math.sqrt(1 - SHARED) * own[k] + math.sqrt(SHARED) * common
        out[name] = float(mean * (1 + cv * np.clip(z, -2.5, 2.5)))
    return out


def face_parts(idt: Identity, au: np.ndarray, blink: float = 0.0) -> list[Part]:
    """Shapes of the whole head (back to front) for drawn AU intensities ``au`` (NUM_DRAWN,)."""
    a = {name: float(au[i]) for name, i in AU_INDEX.items()}
    skin = np.array(idt.skin)
    dark = skin * 0.45
    W = idt.face_w
    chin_drop = 0.16 * a["AU26"]
    parts: list[Part] = []

    # behind the face: long hair, neck, shoulders, ears
    if idt.hair_style == 1:
        parts.append(Part(_ellipse(0, -0.1, W * 1.28, 1.2), idt.hair, -0.3))
        parts.append(Part(np.array([[-W * 1.25, -0.1], [W * 1.25, -0.1], [W * 1.2, 1.0], [-W * 1.2, 1.0]]),
                          idt.hair, -0.3))
    parts.append(Part(np.array([[-0.42 * W, 0.4], [0.42 * W, 0.4], [0.5 * W, 1.7], [-0.5 * W, 1.7]]),
                      _c(skin * 0.82), -0.1))
    parts.append(Part(np.array([[-0.55, 1.45], [0.55, 1.45], [2.2, 2.0], [2.4, 4.0], [-2.4, 4.0], [-2.2, 2.0]]),
                      idt.clothes, -0.1))
    for side in (-1, 1):
        parts.append(Part(_ellipse(side * W * 0.97, -0.02, 0.11, 0.19), _c(skin * 0.9), 0.0))
    if idt.hair_style != 1:
        parts.append(Part(_ellipse(0, -0.25, W * 1.08, 0.95), idt.hair, -0.1))

    parts.append(Part(_face_outline(idt, chin_drop), idt.skin, 0.0))
    # soft highlights where light falls on the forehead, nose ridge and cheekbones
    shine = _c(np.minimum(skin * 1.1 + 14, 255))
    parts.append(Part(_ellipse(0.0, -0.62, W * 0.55, 0.2), shine, 0.2))
    for side in (-1, 1):
        parts.append(Part(_ellipse(side * (idt.eye_dx + 0.02), 0.1, 0.2, 0.12), shine, 0.3))

    # cheeks (AU6): raised, brighter apples with a furrow above and crow's feet at the eye corners
    for side in (-1, 1):
        cx = side * (idt.eye_dx + 0.03)
        ey = _eye_y(idt, side)
        cheek = _lerp(skin, np.minimum(skin * 1.12 + np.array([30, 0, 5]), 255), a["AU6"])
        parts.append(Part(_ellipse(cx, 0.16 - 0.05 * a["AU6"], 0.16, 0.1), cheek, 0.3))
        if a["AU6"] > 0.05:
            x0 = side * (idt.eye_dx + idt.eye_w + 0.03)
            color = _lerp(skin, dark, min(1.0, 1.2 * a["AU6"]))
            for ang in (-30, 0, 30):
                r = math.radians(ang)
                tip = (x0 + side * 0.11 * math.cos(r), ey + 0.11 * math.sin(r))
                parts.append(Part(np.array([[x0, ey], tip]), color, 0.25, 0.02))
            arc = _curve(cx - 0.13, cx + 0.13, ey + 0.13 - 0.05 * a["AU6"], 0.03)
            parts.append(Part(arc, color, 0.3, 0.02))

    # stubble / beard shadow over the jaw, lower cheeks and upper lip (over the
    # cheeks' apples: hair covers them)
    if idt.beard > 0:
        parts.append(Part(_beard_outline(idt, chin_drop), _lerp(skin, np.array(idt.hair) * 0.7, 0.45 * idt.beard),
                          0.3))
    for x, y, r in idt.moles:
        parts.append(Part(_ellipse(x, y, r, r, 10), _c(skin * 0.5), 0.3))

    # nasolabial folds (AU10 deepens them most, AU12 and AU9 too); each person has their own at rest
    fold = max(idt.rest_fold, a["AU10"], 0.8 * a["AU12"], 0.6 * a["AU9"])
    corner_x = idt.mouth_w * (1 + 0.18 * a["AU12"] + 0.25 * a["AU20"] - 0.3 * a["AU23"])
    for side in (-1, 1):
        top = (side * (0.03 + 1.0 * idt.nose_w), idt.nose_y - 0.03 - 0.04 * a["AU10"])
        bottom = (side * (corner_x + 0.07), idt.mouth_y + 0.04 - 0.06 * a["AU12"])
        mid = (side * (corner_x + 0.02 + 0.04 * a["AU12"]), (top[1] + bottom[1]) / 2)
        parts.append(Part(_bezier(top, mid, bottom), _lerp(skin, dark, 0.65 * fold), 0.3, 0.018 + 0.02 * fold))

    # shading of the eye sockets and the sides of the nose (face detectors key on these dark areas)
    for side in (-1, 1):
        ey = _eye_y(idt, side)
        parts.append(Part(_ellipse(side * idt.eye_dx, ey - 0.02, idt.eye_w * 1.45, idt.eye_h * 2.1),
                          _c(skin * 0.86), 0.28))
        parts.append(Part(np.array([[side * 0.05, idt.eye_y + 0.06], [side * 0.09, idt.nose_y - 0.06]]),
                          _c(skin * 0.85), 0.4, 0.05))
    parts += _forehead(idt, a, skin, dark)
    parts += _brows(idt, a)
    parts += _eyes(idt, a, skin, dark, blink)
    parts += _nose(idt, a, skin, dark)
    parts += _mouth(idt, a, skin, dark, corner_x, chin_drop)
    if idt.glasses:
        parts += _glasses(idt)

    if idt.hair_style == 2:
        edge = np.linspace(-W * 1.02, W * 1.02, 9)
        wave = -0.78 - 0.05 * np.cos(np.linspace(0, 4 * math.pi, 9))
        fringe = np.concatenate([np.stack([edge, wave], 1), [[W * 1.02, -1.15], [-W * 1.02, -1.15]]])
        parts.append(Part(fringe, idt.hair, 0.1))
    return parts


def occluder_parts(idt: Identity, variant: int, rng: np.random.Generator) -> list[Part]:
    """A hand or object in front of the face (drawn after it). ``variant``: see segments.py."""
    hand = _c(np.array(idt.skin) * 0.88)
    if variant in (0, 1):        # hand over the mouth / over one eye
        cx, cy = (0.05, 0.62) if variant == 0 else (0.33 * (1 if rng.random() < 0.5 else -1), -0.12)
        parts = [Part(_ellipse(cx, cy, 0.36, 0.26), hand, 0.9)]
        for k in range(4):
            x, tip = cx - 0.24 + 0.15 * k, cy - 0.42 + 0.05 * abs(k - 1.5)
            finger = np.array([[x, cy - 0.05], [x + 0.11, cy - 0.05], [x + 0.13, tip], [x + 0.02, tip - 0.02]])
            parts.append(Part(finger, hand, 0.9))
        return parts
    color = _c(rng.uniform(20, 235, 3))  # a cup or microphone in front of the lower face
    return [Part(np.array([[-0.28, 0.42], [0.22, 0.42], [0.24, 1.5], [-0.3, 1.5]]), color, 0.9),
            Part(_ellipse(-0.03, 0.42, 0.25, 0.06), _c(np.array(color) * 0.7), 0.9)]


def cover_parts(rng: np.random.Generator) -> list[Part]:
    """A board covering the whole face (no face can be found)."""
    color = rng.uniform(40, 220, 3)
    return [Part(np.array([[-1.3, -1.35], [1.3, -1.3], [1.35, 1.4], [-1.3, 1.45]]), _c(color), 1.0),
            Part(np.array([[-1.0, -0.6], [0.9, -0.6], [0.9, -0.45], [-1.0, -0.45]]), _c(color * 0.6), 1.0)]


@dataclass(frozen=True)
class Drawing:
    """Parts packed for fast drawing: all points projected in one call, then drawn span by span."""

    points: np.ndarray                                      # (P, 2) face coordinates
    depth: np.ndarray                                       # (P,)
    spans: tuple[tuple[int, int, tuple[int, int, int], float], ...]  # start, stop, fill, line width


def compile_parts(parts: list[Part]) -> Drawing:
    """Pack ``parts`` (drawn in order) into a ``Drawing``."""
    spans, start = [], 0
    for part in parts:
        stop = start + len(part.points)
        fill = tuple(int(round(min(max(v, 0.0), 255.0))) for v in part.color)
        spans.append((start, stop, fill, part.width))
        start = stop
    points = np.concatenate([p.points for p in parts]) if parts else np.zeros((0, 2))
    depth = np.concatenate([np.full(len(p.points), p.depth) for p in parts]) if parts else np.zeros(0)
    return Drawing(points=points, depth=depth, spans=tuple(spans))


def draw_drawing(draw: ImageDraw.ImageDraw, drawing: Drawing, pose: Pose) -> None:
    """Draw a packed ``Drawing`` with ``pose`` mapping face coordinates to pixels."""
    coords = pose.project(drawing.points, drawing.depth).ravel().tolist()
    for start, stop, fill, width in drawing.spans:
        xy = coords[2 * start:2 * stop]
        if width > 0:
            draw.line(xy, fill=fill, width=max(int(round(width * pose.scale)), 1), joint="curve")
        else:
            draw.polygon(xy, fill=fill)


def draw_parts(draw: ImageDraw.ImageDraw, parts: list[Part], pose: Pose) -> None:
    """Draw ``parts`` in order with ``pose`` mapping face coordinates to pixels."""
    draw_drawing(draw, compile_parts(parts), pose)


def _forehead(idt: Identity, a: dict[str, float], skin: np.ndarray, dark: np.ndarray) -> list[Part]:
    parts = []
    y0 = idt.brow_y - 0.2
    if a["AU1"] > 0.05:     # central horizontal lines
        color = _lerp(skin, dark, min(1.0, 1.1 * a["AU1"]))
        for dy in (0.0, -0.08):
            parts.append(Part(_curve(-0.17, 0.17, y0 + dy, -0.03), color, 0.2, 0.022))
    if a["AU2"] > 0.05:     # lateral lines above the outer brows
        color = _lerp(skin, dark, min(1.0, 1.1 * a["AU2"]))
        for side in (-1, 1):
            for dy in (0.0, -0.08):
                x = sorted((side * 0.27, side * 0.58))
                parts.append(Part(_curve(x[0], x[1], y0 + dy + 0.02, -0.02), color, 0.2, 0.022))
    if a["AU4"] > 0.05:     # vertical furrows between the brows
        color = _lerp(skin, dark, min(1.0, 1.2 * a["AU4"]))
        for x in (-0.045, 0.045):
            parts.append(Part(np.array([[x, idt.brow_y - 0.1], [x * 0.8, idt.brow_y + 0.09]]), color, 0.3, 0.024))
    if a["AU9"] > 0.05:     # wrinkles across the nose bridge
        color = _lerp(skin, dark, min(1.0, a["AU9"]))
        for y in (idt.eye_y + 0.08, idt.eye_y + 0.14, idt.eye_y + 0.2):
            parts.append(Part(_curve(-0.07, 0.07, y, 0.015), color, 0.4, 0.016))
    return parts


def _brows(idt: Identity, a: dict[str, float]) -> list[Part]:
    parts = []
    # brows stay darker than the skin whatever the hair colour (as in most faces); sparse brows
    # let the skin through
    full = np.minimum(np.array(idt.hair) * 0.8, np.array(idt.skin) * 0.5)
    color = _lerp(np.array(idt.skin), full, idt.brow_density)
    for side in (-1, 1):
        brow_y = idt.brow_y + side * idt.brow_asym / 2
        inner = np.array([0.08, brow_y + 0.02])
        mid = np.array([0.28, brow_y - idt.brow_arch])
        outer = np.array([0.50, brow_y + 0.01])
        inner[1] -= 0.15 * a["AU1"]
        mid[1] -= 0.05 * a["AU1"] + 0.08 * a["AU2"]
        outer[1] -= 0.16 * a["AU2"]
        for p, k in ((inner, 1.5), (mid, 1.0), (outer, 0.6)):
            p[1] += 0.08 * a["AU4"] * k
        inner[0] -= 0.05 * a["AU4"]
        inner[1] += 0.03 * a["AU9"]
        center = _bezier(tuple(inner), tuple(mid), tuple(outer), 9)
        half = idt.brow_thick / 2 * np.linspace(1.2, 0.6, 9)[:, None]
        band = np.concatenate([center - [0, 1] * half, (center + [0, 1] * half)[::-1]])
        band[:, 0] *= side
        parts.append(Part(band, color, 0.3))
    return parts


def _eyes(idt: Identity, a: dict[str, float], skin: np.ndarray, dark: np.ndarray, blink: float) -> list[Part]:
    parts = []
    open_up = idt.eye_h * (1 + 0.9 * a["AU5"] - 0.3 * a["AU7"] - 0.15 * a["AU4"] - 0.1 * a["AU6"]) * (1 - blink)
    open_low = idt.eye_h * 0.6 * (1 - 0.6 * a["AU7"] - 0.4 * a["AU6"] + 0.2 * a["AU5"]) * (1 - blink)
    lid_color = _lerp(skin * 0.8, dark * 0.7, min(1.0, a["AU7"] * 1.2))
    slope = math.tan(math.radians(idt.eye_tilt))
    for side in (-1, 1):
        cx, cy, w = side * idt.eye_dx, _eye_y(idt, side), idt.eye_w
        x = np.linspace(-w, w, 15)
        shape = np.clip(1 - (x / w) ** 2, 0, 1) ** 0.8
        tilt = -slope * side * x            # the outer corner (away from the nose) sits higher
        upper = cy + tilt - open_up * shape
        lower = cy + tilt + max(open_low, 0.004) * shape
        sclera = np.concatenate([np.stack([cx + x, upper], 1), np.stack([cx + x, lower], 1)[::-1]])
        parts.append(Part(sclera, (235, 232, 225), 0.3))
        for radius, color in ((0.055, idt.iris), (0.024, (15, 12, 10))):
            t = np.linspace(0, 2 * math.pi, 20, endpoint=False)
            px, py = radius * np.cos(t), radius * np.sin(t) + cy + 0.005
            lo = cy - slope * side * px - open_up * np.clip(1 - (px / w) ** 2, 0, 1) ** 0.8
            hi = cy - slope * side * px + max(open_low, 0.004) * np.clip(1 - (px / w) ** 2, 0, 1) ** 0.8
            parts.append(Part(np.stack([cx + px, np.clip(py, lo, hi)], 1), color, 0.3))
        parts.append(Part(np.stack([cx + x, upper], 1), (25, 20, 20), 0.3, 0.024))
        parts.append(Part(np.stack([cx + x, lower], 1), lid_color, 0.3, 0.012 + 0.022 * a["AU7"]))
    return parts


def _nose(idt: Identity, a: dict[str, float], skin: np.ndarray, dark: np.ndarray) -> list[Part]:
    lift = 0.035 * a["AU9"] + 0.02 * a["AU10"]
    ny = idt.nose_y - lift
    k = idt.nose_w / GEOMETRY["nose_w"][0]
    parts = [Part(np.array([[0.03, idt.eye_y + 0.05], [0.05, ny - 0.08]]), _c(skin * 0.85), 0.45, 0.018),
             Part(_ellipse(0.0, ny - 0.02, idt.nose_w, 0.06), _c(skin * 0.93), 0.5)]
    for side in (-1, 1):
        parts.append(Part(_ellipse(side * 0.055 * k, ny + 0.01, 0.032 * k, 0.016), _c(dark * 0.8), 0.5))
    return parts


def _mouth(idt: Identity, a: dict[str, float], skin: np.ndarray, dark: np.ndarray,
           corner_x: float, chin_drop: float) -> list[Part]:
    my = idt.mouth_y + 0.3 * chin_drop
    corner_dy = -0.11 * a["AU12"] + 0.11 * a["AU15"] + 0.02 * a["AU20"]
    thin = max(1 - 0.3 * a["AU23"] - 0.7 * a["AU24"] - 0.3 * a["AU20"], 0.15)
    tu, tl = idt.lip_upper * thin, idt.lip_lower * thin
    opening = 0.065 * a["AU25"] + 0.11 * a["AU25"] * a["AU26"]
    raise10 = 0.055 * a["AU10"]
    x = np.linspace(-corner_x, corner_x, 17)
    u = x / corner_x
    seam = my + corner_dy * u ** 2 + idt.mouth_asym / 2 * u    # one corner a little higher
    bulk = np.clip(1 - u ** 2, 0, 1)
    upper_low = seam - raise10 * bulk ** 0.5
    lower_up = seam + opening * bulk ** 0.7
    bow = 1 - 0.35 * np.exp(-(u / 0.12) ** 2)          # Cupid's bow dip in the middle of the upper lip
    upper_top = upper_low - tu * bulk ** 0.5 * bow - 0.004
    lower_low = lower_up + tl * bulk ** 0.6 + 0.004
    # tightened lips darken; pressed lips go pale (blood pressed out)
    lip = np.array(idt.lip) * (1 - 0.3 * a["AU23"]) * (1 - 0.4 * a["AU24"]) + skin * 0.4 * a["AU24"]
    parts = []
    gap = lower_up - upper_low
    if gap.max() > 0.004:
        parts.append(Part(_band(x, upper_low, lower_up), (55, 18, 22), 0.3))
        teeth_h = 0.03 if a["AU10"] >= a["AU25"] else 0.018
        parts.append(Part(_band(x, upper_low, np.minimum(upper_low + teeth_h, lower_up)), (238, 236, 226), 0.3))
    parts.append(Part(_band(x, upper_top, upper_low), _c(lip), 0.3))
    parts.append(Part(_band(x, lower_up, lower_low), _c(lip * 1.05), 0.3))
    parts.append(Part(np.stack([x, (upper_low + lower_up) / 2 if gap.max() <= 0.004 else upper_low], 1),
                      _c(np.array(idt.lip) * 0.55), 0.3, 0.012))
    if a["AU23"] > 0.05:    # tightened lips: vertical wrinkles across them
        color = _lerp(np.array(idt.lip), dark * 0.6, min(1.0, a["AU23"]))
        for xf in (-0.5, -0.17, 0.17, 0.5):
            k = int(np.argmin(np.abs(u - xf)))
            parts.append(Part(np.array([[x[k], upper_top[k]], [x[k], lower_low[k]]]), color, 0.3, 0.012))
    if a["AU24"] > 0.05:    # lips pressed: a crease pushed up above the chin
        y = float(lower_low.max()) + 0.07
        parts.append(Part(_curve(-0.16, 0.16, y, -0.03), _lerp(skin, dark, min(1.0, 1.2 * a["AU24"])), 0.3, 0.025))
    if a["AU15"] > 0.05:    # corners pulled down: lines running down from them
        color = _lerp(skin, dark, min(1.0, a["AU15"]))
        for side in (-1, 1):
            x0, y0 = side * (corner_x + 0.015), my + corner_dy + 0.01
            parts.append(Part(np.array([[x0, y0], [x0 + side * 0.03, y0 + 0.15]]), color, 0.3, 0.02))
    return parts


def _face_outline(idt: Identity, chin_drop: float) -> np.ndarray:
    """The head's outline: a dome above the centre line, then cheekbones, jaw angle and chin."""
    t = np.linspace(math.pi, 2 * math.pi, 25)[1:-1]
    c, s = np.cos(t), np.sin(t)
    upper = np.stack([idt.face_w * np.sign(c) * np.abs(c) ** (2 / 2.4), -np.abs(s) ** (2 / 2.2)], 1)  # top: y = -1
    return np.concatenate([[[idt.face_w, 0.0]], _lower_face(idt, chin_drop), [[-idt.face_w, 0.0]], upper])


def _lower_face(idt: Identity, chin_drop: float) -> np.ndarray:
    """The right cheek, jaw angle, chin and left cheek, from (face_w, 0) to (-face_w, 0) exclusive."""
    h = idt.face_h * (1 + chin_drop)
    angle = (idt.jaw_w, 0.72 * h)                  # gonion
    cheek = _bezier((idt.face_w, 0.0), (idt.face_w * 1.01, 0.4 * h), angle, 10)[1:]
    chin = _bezier(angle, (idt.chin_w + 0.5 * (idt.jaw_w - idt.chin_w), h), (idt.chin_w, h), 8)[1:]
    front = _bezier((idt.chin_w, h), (0.5 * idt.chin_w, h * 1.01), (0.0, h * 1.01), 5)[1:-1]
    right = np.concatenate([cheek, chin, front])
    return np.concatenate([right, right[::-1] * [-1, 1]])


def _beard_outline(idt: Identity, chin_drop: float) -> np.ndarray:
    """Where stubble grows: the jaw and chin, up the cheek along a line from the sideburn to beside
    the nostrils (below the cheek's apple), and over the upper lip."""
    top = [[-idt.face_w, 0.0], [-(idt.mouth_w + 0.07), idt.nose_y + 0.02], [-0.1, idt.nose_y + 0.05],
           [0.1, idt.nose_y + 0.05], [idt.mouth_w + 0.07, idt.nose_y + 0.02], [idt.face_w, 0.0]]
    return np.concatenate([_lower_face(idt, chin_drop), top])


def _glasses(idt: Identity) -> list[Part]:
    """A frame around both eyes and a bridge over the nose (the lenses are clear)."""
    width = 0.018 if idt.glasses == 1 else 0.035
    color = (30, 28, 30) if idt.glasses == 1 else (55, 35, 25)
    parts = []
    for side in (-1, 1):
        cx, cy = side * idt.eye_dx, _eye_y(idt, side) + 0.01
        rim = _ellipse(cx, cy, idt.eye_w + 0.07, 0.12, 24)
        parts.append(Part(np.concatenate([rim, rim[:1]]), color, 0.6, width))
        arm = np.array([[side * (idt.eye_dx + idt.eye_w + 0.07), cy - 0.03], [side * idt.face_w, cy - 0.05]])
        parts.append(Part(arm, color, 0.6, width))
    bridge = _curve(-(idt.eye_dx - idt.eye_w - 0.07), idt.eye_dx - idt.eye_w - 0.07, idt.eye_y - 0.03, -0.02, 5)
    parts.append(Part(bridge, color, 0.6, width))
    return parts


def _eye_y(idt: Identity, side: int) -> float:
    """Height of the eye on ``side`` (-1 image left, +1 image right), asymmetry included."""
    return idt.eye_y + side * idt.eye_asym / 2


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 20) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _curve(x0: float, x1: float, y: float, bend: float, n: int = 9) -> np.ndarray:
    """A horizontal arc from x0 to x1 at height y whose middle is displaced by ``bend``."""
    x = np.linspace(x0, x1, n)
    u = np.linspace(-1, 1, n)
    return np.stack([x, y + bend * (1 - u ** 2)], axis=1)


def _bezier(p0: tuple[float, float], p1: tuple[float, float], p2: tuple[float, float], n: int = 9) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * np.array(p0) + 2 * t * (1 - t) * np.array(p1) + t ** 2 * np.array(p2)


def _band(x: np.ndarray, top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    return np.concatenate([np.stack([x, top], 1), np.stack([x, bottom], 1)[::-1]])


def _lerp(a: np.ndarray, b: np.ndarray, t: float) -> Color:
    return _c(np.asarray(a) * (1 - t) + np.asarray(b) * t)


def _c(v: np.ndarray) -> Color:
    v = np.clip(np.asarray(v, dtype=float), 0, 255)
    return (float(v[0]), float(v[1]), float(v[2]))
