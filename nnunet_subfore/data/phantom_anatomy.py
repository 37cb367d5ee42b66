"""The anatomy of a synthetic CT phantom: from a drawn :class:`PhantomCase` to HU voxels and organ labels.

The scan is laid out as a clinical CT: a field of view wider than the patient (air on all sides), a
patient table below the back, the arms beside the body in some cases, and a scan range somewhere
between the lung apices and the pelvis. Inside the body: subcutaneous fat, a muscle wall, the
paraspinal muscles, a segmented spine (vertebral bodies with cortex, cancellous bone and discs,
the spinal canal, posterior arches), ribs and a sternum over the chest and upper abdomen, two large
lungs (about -850 HU, with vessels) above a two-domed diaphragm, the trachea and main bronchi, the
heart, the aorta and the inferior vena cava, a stomach with a gas cap, bowel in visceral fat (with
some gas), and the labelled organs: liver (1), spleen (2), kidneys (3, cortex and medulla). Organs
carry low-frequency texture; the noise is slightly correlated.

Axes: SimpleITK numpy order ``(z, y, x)``; with an identity direction (LPS) z grows toward the head,
y toward the back (the table lies at large y), x toward the patient's left (the liver lies at small x).
All lengths are in mm and scale with the body's half-width, so a phantom looks the same at any voxel
size; the scan range along z is the slice count times the slice thickness.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from nnunet_subfore.data.phantom_shapes import Grid
from nnunet_subfore.data.phantom_variety import HU, PhantomCase

#: Label values of the organs (``dataset.json``).
LABELS = {"background": 0, "liver": 1, "spleen": 2, "kidneys": 3}

_FIELD_STREAM = 1  # the case's texture and noise come from seed sequence (seed, 1)


@dataclass(frozen=True)
class Layout:
    """Where the body and its parts lie, in mm (see :func:`layout`)."""

    a: float  # body half-width (left-right)
    b: float  # body half-depth (anterior-posterior)
    cy: float
    cx: float
    fat: float
    wall: float
    table_top: float
    table_thickness: float
    unit: float  # the anatomical length unit along z (mm): the body's half-width, unless the range is too short or long
    dome: float  # height of the diaphragm's domes
    lung_height: float
    spine_y: float
    spine_radius: float

    @property
    def cavity(self) -> Tuple[float, float]:
        """Half-depth and half-width of the body cavity (inside the muscle wall)."""
        return self.b - self.fat - self.wall, self.a - self.fat - self.wall


def layout(case: PhantomCase, grid: Grid) -> Layout:
    """Body size and position in the field of view, the table below it, and the scan range along z."""
    hz, hy, hx = grid.half
    d = case.details
    a = min(case.body_width, 0.95 / (1.0 + abs(d["taper"]))) * hx  # air on both sides, wherever the body is widest
    b = case.body_depth * a
    cy, cx = case.body_shift[0] * 2 * hy, case.body_shift[1] * 2 * hx
    room = max(0.96 * hx / (1.0 + abs(d["taper"])) - a, 0.0)
    cx = float(np.clip(cx, -room, room))
    gap = max(d["table_gap"] * hy, 2.5 * grid.spacing[1])  # a pad between back and couch: apart even at coarse voxels
    thickness = max(0.12 * hy, 4.0 * grid.spacing[1])
    excess = cy + b + gap + thickness - 0.96 * hy
    if excess > 0:  # the table must fit below the body: move the patient up
        cy -= excess
    b = min(b, cy + 0.97 * hy)  # and the body inside the field of view in front
    unit = float(np.clip(a, 2 * hz / 4.0, 2 * hz / 1.45))  # the scan range: 1.45 to 4 body half-widths
    lo = max(-hz + 0.7 * unit, hz - 1.3 * unit)  # down to the kidneys' upper poles; up to the lung apices at most
    hi = hz - 0.28 * unit  # some lung in every scan
    dome = hi - case.chest_share * max(hi - lo, 0.0)
    fat = case.fat * a
    spine_radius = 0.13 * a
    return Layout(a=a, b=b, cy=cy, cx=cx, fat=fat, wall=d["wall"] * a, table_top=cy + b + gap,
                  table_thickness=thickness, unit=unit, dome=dome, lung_height=1.35 * unit * case.lung_size,
                  spine_y=cy + b - fat - 2.6 * spine_radius, spine_radius=spine_radius)


class Canvas:
    """The volume being painted: HU and labels, with the case's grid, layout and random fields."""

    def __init__(self, case: PhantomCase) -> None:
        self.case = case
        self.grid = Grid(case.shape, case.spacing)
        self.at = layout(case, self.grid)
        self.hu = dict(case.tissue_hu)
        self.rng = np.random.default_rng([case.seed, _FIELD_STREAM])
        self.image = np.full(case.shape, HU["air"], dtype=np.float32)
        self.label = np.zeros(case.shape, dtype=np.uint8)
        unit = self.at.unit
        self.texture = self.grid.smooth_field(self.rng, 0.25 * unit)
        self.bowel = self.grid.smooth_field(self.rng, 0.18 * unit)

    def paint(self, alpha: np.ndarray, value, label: int = None) -> None:
        """Blend ``value`` (HU, a number or an array) in with weight ``alpha``; set ``label`` where alpha > 0.5."""
        self.image += alpha * (np.asarray(value, dtype=np.float32) - self.image)
        if label is not None:
            self.label[np.broadcast_to(alpha > 0.5, self.image.shape)] = label

    def tissue(self, name: str, texture: float = 1.0) -> np.ndarray:
        """A tissue's HU with the case's low-frequency texture (``texture`` scales its amplitude)."""
        return self.hu[name] + np.float32(texture * self.case.texture_sd) * self.texture


def render(case: PhantomCase) -> Tuple[np.ndarray, np.ndarray]:
    """The phantom of ``case``: ``(image, label)``, int16 HU and uint8 :data:`LABELS`, in ``(z, y, x)`` order."""
    canvas = Canvas(case)
    _table(canvas)
    cavity = _body(canvas)
    _arms(canvas)
    below = _cavity_contents(canvas, cavity)
    _thorax(canvas, cavity)
    _abdomen(canvas, cavity, below)
    _vessels(canvas)
    _spine(canvas)
    _ribs_and_sternum(canvas)
    _airways(canvas, cavity)
    image = canvas.image + np.float32(case.scanner_offset) + canvas.grid.noise(canvas.rng, case.noise_sd)
    np.clip(np.rint(image), -1024, 3071, out=image)
    return image.astype(np.int16), canvas.label


def _diaphragm(c: Canvas) -> np.ndarray:
    """Height (mm) of the diaphragm over each ``(y, x)``: two domes, the right one higher, lower at the edges."""
    at, d = c.at, c.case.details
    bc, ac = at.cavity
    depth = d["dome_height"] * at.unit
    heights = []
    for side, up in ((-1.0, d["right_dome_up"] * at.unit), (1.0, 0.0)):
        q = ((c.grid.x - at.cx - side * 0.42 * ac) / (0.5 * ac)) ** 2 + ((c.grid.y - at.cy) / (0.9 * bc)) ** 2
        heights.append(at.dome + up - depth * np.minimum(q, 1.5))
    return np.maximum(*heights)


def _table(c: Canvas) -> None:
    """A curved carbon-fibre couch: a foam core in a dense shell, across most of the field of view, every slice."""
    at, hx = c.at, c.grid.half[2]
    curve = c.case.details["table_curve"] * at.table_thickness * ((c.grid.x - at.cx) / hx) ** 2
    top = at.table_top - curve
    shell = max(0.2 * at.table_thickness, c.grid.spacing[1])
    width = c.grid.soft(0.9 * hx - np.abs(c.grid.x))
    slab = c.grid.soft(c.grid.y - top) * c.grid.soft(top + at.table_thickness - c.grid.y) * width
    core = c.grid.soft(c.grid.y - top - shell) * c.grid.soft(top + at.table_thickness - shell - c.grid.y)
    c.paint(slab, c.hu["table"])
    c.paint(slab * core, c.hu["table_foam"])


def _body(c: Canvas) -> np.ndarray:
    """Skin to cavity: subcutaneous fat, the muscle wall; the body tapers slightly along z. Returns the cavity."""
    at, g = c.at, c.grid
    scale = 1.0 + c.case.details["taper"] * g.z / g.half[0]
    centre = (at.cy, at.cx)

    def layer(inset: float) -> np.ndarray:
        return g.ellipse(centre, ((at.b - inset) * scale, (at.a - inset) * scale), power=2.4)

    c.paint(layer(0.0), c.tissue("fat", 0.5))
    c.paint(layer(at.fat), c.tissue("muscle", 0.5))
    cavity = layer(at.fat + at.wall)
    r = at.spine_radius
    for side in (-1.0, 1.0):  # paraspinal muscles, behind the cavity beside the spine
        c.paint(g.ellipse((at.spine_y + 1.9 * r, at.cx + side * 1.45 * r), (1.1 * r, 1.2 * r)), c.tissue("muscle", 0.5))
    return cavity


def _arms(c: Canvas) -> None:
    """Arms beside the body, when drawn: fat, muscle, humerus (the field of view's edge may cut a broad patient's)."""
    at, g = c.at, c.grid
    ax, ay = 0.24 * at.a, 0.3 * at.a
    gap = max(c.case.details["arm_gap"] * at.a, 1.5 * g.spacing[2])
    if not c.case.arms:
        return
    for side in (-1.0, 1.0):
        centre = (at.cy + 0.15 * at.b, at.cx + side * (at.a + gap + ax))
        c.paint(g.ellipse(centre, (ay, ax)), c.tissue("fat", 0.5))
        inset = 0.5 * at.fat
        c.paint(g.ellipse(centre, (ay - inset, ax - inset)), c.tissue("muscle", 0.5))
        c.paint(g.ellipse(centre, (0.3 * ax, 0.3 * ax)), c.hu["bone"] * 0.7)


def _cavity_contents(c: Canvas, cavity: np.ndarray) -> np.ndarray:
    """Mediastinal fat above the diaphragm; bowel loops in visceral fat (with some gas) below. Returns 'below'."""
    g, case = c.grid, c.case
    below = 1.0 - g.above(_diaphragm(c))
    c.paint(cavity * (1.0 - below), c.tissue("fat", 0.5))
    threshold = float(np.quantile(c.bowel[::2, ::2, ::2], case.visceral_fat))
    loops = g.soft((c.bowel - threshold) * 0.3 * c.at.unit)
    contents = c.hu["fat"] + loops * (c.hu["bowel"] - c.hu["fat"])
    gas_level = float(np.quantile(c.bowel[::2, ::2, ::2], 1.0 - case.details["bowel_gas"] * (1.0 - case.visceral_fat)))
    gas = g.soft((c.bowel - gas_level) * 0.3 * c.at.unit) if case.details["bowel_gas"] > 0.002 else 0.0
    contents = contents + gas * (c.hu["air"] - contents)
    c.paint(cavity * below, contents + 0.3 * case.texture_sd * c.texture)
    return below


def _thorax(c: Canvas, cavity: np.ndarray) -> None:
    """Two large lungs above the diaphragm (with vessels), and the heart on it."""
    at, g, d = c.at, c.grid, c.case.details
    bc, ac = at.cavity
    h = at.lung_height
    above = g.above(_diaphragm(c))
    vessels = g.soft((g.smooth_field(c.rng, 2.2 * min(g.spacing)) - 1.9) * 2.0)
    lung_hu = c.hu["lung"] + 0.4 * c.case.texture_sd * c.texture
    lung_hu = lung_hu + vessels * (0.6 * (c.hu["blood"] - c.hu["lung"]))
    for side in (-1.0, 1.0):
        lung = g.ellipsoid((at.dome + 0.3 * h, at.cy + 0.02 * bc, at.cx + side * 0.5 * ac),
                           (0.72 * h, 0.9 * bc, 0.5 * ac * np.sqrt(c.case.lung_size)), z_power=3.0)
        c.paint(lung * above * cavity, lung_hu)
    s = d["heart_size"]
    heart = g.ellipsoid((at.dome + 0.3 * at.unit, at.cy - 0.22 * bc, at.cx + 0.12 * ac),
                        (0.33 * at.unit * s, 0.5 * bc * s, 0.4 * ac * s))
    c.paint(heart * above * cavity, c.tissue("heart", 0.5))


def _organ(c: Canvas, name: str, centre, semi) -> np.ndarray:
    """An organ's ellipsoid, placed relative to the dome (z) and the cavity (y, x), with its size and shift."""
    at = c.at
    bc, ac = at.cavity
    size, (dz, dy, dx) = c.case.organ_size[name], c.case.organ_shifts[name]
    zc = at.dome + (centre[0] + dz) * at.unit
    yc, xc = at.cy + (centre[1] + dy) * bc, at.cx + (centre[2] + dx) * ac
    return c.grid.ellipsoid((zc, yc, xc), (semi[0] * at.unit * size, semi[1] * bc * size, semi[2] * ac * size))


def _abdomen(c: Canvas, cavity: np.ndarray, below: np.ndarray) -> None:
    """Stomach (fluid with a gas cap toward the front), liver, spleen, kidneys (cortex and medulla)."""
    g = c.grid
    stomach = _organ(c, "stomach", (-0.3, -0.25, 0.3), (0.32, 0.32, 0.28)) * below * cavity
    c.paint(stomach, c.tissue("fluid", 0.3))
    front = c.at.cy - 0.57 * c.at.cavity[0]  # the stomach's front wall, roughly
    gas_level = front + c.case.details["stomach_gas"] * 0.64 * c.at.cavity[0]
    c.paint(stomach * g.soft(gas_level - g.y), c.hu["air"])
    spleen_texture = 2.5 if c.case.phase == "arterial" else 1.0  # arciform enhancement
    c.paint(_organ(c, "liver", (-0.38, -0.02, -0.42), (0.55, 0.78, 0.56)) * below * cavity, c.tissue("liver"),
            LABELS["liver"])
    c.paint(_organ(c, "spleen", (-0.3, 0.35, 0.62), (0.3, 0.3, 0.22)) * below * cavity,
            c.tissue("spleen", spleen_texture), LABELS["spleen"])
    for side, up in ((-1.0, 0.0), (1.0, 0.06)):
        centre, semi = (-0.8 + up, 0.42, side * 0.4), (0.3, 0.2, 0.17)
        c.paint(_organ(c, "kidneys", centre, semi) * cavity, c.tissue("kidneys", 0.5), LABELS["kidneys"])
        medulla = _organ(c, "kidneys", centre, tuple(0.55 * s for s in semi))
        c.paint(medulla * cavity, c.tissue("kidney_medulla", 0.5))


def _vessels(c: Canvas) -> None:
    """The aorta (left in front of the spine, every slice) and the inferior vena cava (right, below the heart)."""
    at, g = c.at, c.grid
    r = at.spine_radius
    c.paint(g.ellipse((at.spine_y - 1.3 * r, at.cx + 0.9 * r), (0.6 * r, 0.6 * r)), c.hu["blood"], 0)
    venous = 0.3 if c.case.phase == "arterial" else 1.0
    ivc_hu = HU["blood"] + venous * (c.hu["blood"] - HU["blood"])
    below_heart = 1.0 - g.above(at.dome + 0.1 * at.unit)
    ivc = g.ellipse((at.spine_y - 1.4 * r, at.cx - 1.3 * r), (0.5 * r, 0.6 * r)) * below_heart
    c.paint(ivc, ivc_hu, 0)


def _spine(c: Canvas) -> None:
    """Vertebral bodies (cortex, cancellous bone) with discs between them, the spinal canal and the posterior arch."""
    at, g, d = c.at, c.grid, c.case.details
    r, ys, xs = at.spine_radius, at.spine_y, at.cx
    period = 0.2 * at.unit
    position = (g.z / period + d["vertebra_phase"]) % 1.0
    vertebra = g.soft((0.4 - np.abs(position - 0.5)) * period)  # 80 % bone, 20 % disc
    body = g.ellipse((ys, xs), (0.9 * r, r))
    c.paint(body, c.hu["cartilage"] * 0.7, 0)
    c.paint(body * vertebra, c.hu["bone"])
    c.paint(g.ellipse((ys, xs), (0.65 * r, 0.75 * r)) * vertebra, c.hu["cancellous_bone"])
    c.paint(g.ellipse((ys + 1.35 * r, xs), (0.75 * r, 0.75 * r)) * vertebra, c.hu["bone"], 0)  # arch around the canal
    c.paint(g.ellipse((ys + 2.2 * r, xs), (0.6 * r, 0.2 * r)) * vertebra, c.hu["bone"], 0)  # spinous process
    c.paint(g.ellipse((ys + 1.35 * r, xs), (0.42 * r, 0.42 * r)), c.hu["fluid"], 0)  # the canal


def _ribs_and_sternum(c: Canvas) -> None:
    """Ribs in the muscle wall over the chest and upper abdomen (sloping down toward the front); the sternum."""
    at, g, d = c.at, c.grid, c.case.details
    inset = at.fat + 0.5 * at.wall
    ring = g.ellipse((at.cy, at.cx), (at.b - inset, at.a - inset), power=2.4)
    thickness = max(0.05 * at.a, 0.8 * min(g.spacing[1:]))
    shell = ring * (1.0 - g.ellipse((at.cy, at.cx), (at.b - inset - thickness, at.a - inset - thickness), power=2.4))
    period = 0.17 * at.unit
    slope = 0.25 * at.unit * (g.y - at.cy) / at.b  # a rib runs lower toward the front
    position = ((g.z + slope) / period + d["rib_phase"]) % 1.0
    band = g.soft((0.18 - np.abs(position - 0.5)) * period)
    extent = g.above(at.dome - 0.6 * at.unit) * (1.0 - g.above(at.dome + at.lung_height))
    sides = g.soft(g.y - at.cy + 0.55 * at.b)  # no ribs over the front (cartilage there)
    c.paint(shell * band * extent * sides, 0.5 * (c.hu["bone"] + c.hu["cancellous_bone"]), 0)
    sternum = g.ellipse((at.cy - at.b + at.fat + 0.5 * at.wall, at.cx), (0.5 * at.wall + 0.5 * thickness, 0.08 * at.a))
    c.paint(sternum * g.above(at.dome - 0.05 * at.unit), c.hu["cancellous_bone"] + 100.0, 0)


def _airways(c: Canvas, cavity: np.ndarray) -> None:
    """The trachea, leaving through the top of the scan range, and the main bronchi into both lungs."""
    at, g = c.at, c.grid
    bc, ac = at.cavity
    h = at.lung_height
    radius = max(0.055 * at.a, 0.9 * max(g.spacing[1:]))
    bronchus = max(0.045 * at.a, 0.75 * max(g.spacing))  # thick slices blur an oblique bronchus, never cut it
    y = at.spine_y - 2.0 * at.spine_radius  # in front of the spine
    carina = (at.dome + 0.6 * h, y, at.cx)
    airways = g.capsule((g.half[0] + at.unit, y, at.cx), carina, radius)
    for side in (-1.0, 1.0):
        airways = np.maximum(airways, g.capsule(carina, (at.dome + 0.4 * h, y, at.cx + side * 0.42 * ac), bronchus))
    c.paint(airways * cavity, c.hu["air"], 0)
