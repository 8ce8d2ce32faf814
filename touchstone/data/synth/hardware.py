"""Hardware: a metal plaque, case back or tag with an engraved brand mark and serial.

Counterfeit cues: font weight, letter spacing, engraving depth, edge sharpness, plating tone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from touchstone.data.synth import drawing
from touchstone.data.synth.counterfeits import RegionCues
from touchstone.data.synth.materials import TextureBank, linear_light, surface
from touchstone.data.synth.scene import Scene
from touchstone.data.synth.styles import PLATE_SHAPES, BrandStyle

# A brassy, green-yellow drift is what cheap plating looks like next to the real alloy.
PLATING_DRIFT = np.array([16.0, 8.0, -26.0], np.float32)


@dataclass(frozen=True)
class HardwareSpec:
    """One physical piece of hardware: fixed across the photos of an item."""

    shape: str
    text: str
    serial: str
    plating: tuple[float, float, float]
    finish: str
    spacing: float
    level: float  # threshold of the blurred glyphs: lower is bolder
    depth: float
    softness: float
    ground: tuple[float, float, float]
    grain: str


def hardware_spec(
    rng: np.random.Generator,
    brand: BrandStyle,
    category: str,
    ground: tuple[float, float, float],
    cues: RegionCues,
) -> HardwareSpec:
    plating = np.asarray(brand.plating, np.float32) + rng.normal(0, 2.5, 3)
    plating += PLATING_DRIFT * cues.get("plating_tone") * 2.2
    # Fakes cut shallower: down to 0.2 of the full depth at the strongest cue.
    depth = 0.75 + rng.normal(0, 0.04) - 0.55 * cues.get("engraving_depth")
    return HardwareSpec(
        shape=PLATE_SHAPES[category],
        text=brand.engraving,
        serial="".join(str(d) for d in rng.integers(0, 10, 5)),
        plating=tuple(float(c) for c in np.clip(plating, 0, 255)),
        finish=brand.finish,
        spacing=brand.letter_spacing + rng.normal(0, 0.012) + 0.35 * cues.get("letter_spacing"),
        level=0.5 + rng.normal(0, 0.015) - 0.30 * cues.get("font_weight"),
        depth=float(np.clip(depth, 0.1, 1.0)),
        softness=0.07 + abs(rng.normal(0, 0.01)) + 0.8 * cues.magnitude("edge_sharpness"),
        ground=ground,
        grain="pebble" if brand.grain == "canvas" else brand.grain,
    )


def render_hardware(
    spec: HardwareSpec, bank: TextureBank, rng: np.random.Generator, side: int
) -> Scene:
    unit = side / 280.0
    backdrop = surface(bank, rng, spec.grain, spec.ground, side, relief=0.10)
    plate_mask, plate_box = _plate_mask(spec.shape, side)

    relief = 0.10 if spec.finish == "brushed" else 0.03
    shade = 1.0 + relief * bank.field(spec.finish, rng, side, side)
    shade *= linear_light(side, rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.3))

    engraved = np.zeros((side, side), np.float32)
    marks, left, top = _engraving(spec, plate_box, side, unit)
    drawing.paste(engraved, drawing.threshold(marks, spec.level, spec.softness), left, top)
    step = max(1, round(1.5 * unit))
    lit_wall = np.clip(engraved - drawing.shifted(engraved, step, step), 0, 1)
    dark_wall = np.clip(engraved - drawing.shifted(engraved, -step, -step), 0, 1)
    shade *= 1.0 - (0.25 + 0.5 * spec.depth) * engraved - 0.3 * spec.depth * dark_wall
    metal = drawing.colourise(shade, spec.plating) + drawing.grey3(110.0 * spec.depth * lit_wall)
    shadow = drawing.drop_shadow(plate_mask, max(1, round(4 * unit)), 4 * unit, 0.45)
    backdrop = drawing.colourise(shadow, (1.0, 1.0, 1.0)) * backdrop
    shine = 0.55 if spec.finish == "polished" else 0.2
    gloss = plate_mask * (shine * (1.0 - engraved))
    fill = tuple(int(c) for c in np.asarray(spec.ground) * 0.9)
    return Scene.of(drawing.blend(backdrop, metal, plate_mask), gloss, fill)


def _plate_mask(shape: str, side: int) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    if shape == "plaque":
        w, h = 0.80 * side, 0.50 * side
    elif shape == "disc":
        w = h = 0.80 * side
    else:
        w, h = 0.78 * side, 0.54 * side
    box = ((side - w) / 2, (side - h) / 2, (side + w) / 2, (side + h) / 2)
    if shape == "plaque":
        outline = drawing.rounded_rectangle(*box, radius=0.08 * side)
    else:
        outline = drawing.ellipse(side / 2, side / 2, w / 2, h / 2, n=96)
    mask = np.zeros((side, side), np.float32)
    drawing.fill_polygons(mask, [outline])
    return mask, box


def _engraving(
    spec: HardwareSpec, box: tuple[float, float, float, float], side: int, unit: float
) -> tuple[np.ndarray, int, int]:
    """The blurred glyphs of the brand name and serial, on a patch just large enough."""
    x0, y0, x1, y1 = box
    size = int(0.15 * side)
    # Long names get a smaller font so the word fits the plate, as on real hardware.
    fit = 0.74 * (x1 - x0) / drawing.text_width(spec.text, size, 0.16)
    size = max(8, int(size * min(1.0, fit)))
    # Glyphs are drawn twice as large and shrunk, so thin serial digits survive the blur.
    scale = 2
    patch_w, patch_h = int(0.9 * (x1 - x0)), int(0.36 * side)
    glyphs = np.zeros((patch_h * scale, patch_w * scale), np.float32)
    cx, cy = patch_w * scale / 2, patch_h * scale / 2
    drawing.stamp_text(
        glyphs, (cx, cy - 0.07 * side * scale), spec.text, size * scale, spec.spacing
    )
    serial = int(0.06 * side) * scale
    drawing.stamp_text(glyphs, (cx, cy + 0.08 * side * scale), spec.serial, serial, 0.25, 1)
    marks = drawing.blur(drawing.shrink(np.minimum(glyphs, 1.0), patch_w, patch_h), 0.8 * unit)
    left = int((x0 + x1) / 2 - patch_w / 2)
    top = int((y0 + y1) / 2 - patch_h / 2)
    return marks, left, top
