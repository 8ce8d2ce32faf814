"""Logo: a brand monogram of fixed geometry, heat-stamped, printed or foiled on the item.

Counterfeit cues: proportions of the parts, spacing between them, alignment, print quality.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from touchstone.data.synth import drawing
from touchstone.data.synth.counterfeits import RegionCues
from touchstone.data.synth.materials import TextureBank, linear_light, smooth_noise, surface
from touchstone.data.synth.scene import Scene
from touchstone.data.synth.styles import BrandStyle, MonogramElement

RGB = tuple[float, float, float]
# The mark spans this share of the canvas side.
MARK_SIZE = 0.56


@dataclass(frozen=True)
class LogoSpec:
    """One logo on one item: its parts as actually made, and how it was applied."""

    elements: tuple[MonogramElement, ...]
    finish: str
    colour: RGB
    ground: RGB
    grain: str
    relief: float
    roughness: float  # 0 = clean print edges


def logo_spec(
    rng: np.random.Generator,
    brand: BrandStyle,
    ground: RGB,
    grain: str,
    cues: RegionCues,
) -> LogoSpec:
    proportions = cues.get("proportions")
    spacing = cues.get("spacing")
    misaligned = int(rng.integers(len(brand.monogram)))
    alignment = cues.magnitude("alignment")
    drift = rng.normal(0, 1, 2)
    drift /= np.linalg.norm(drift) + 1e-9
    elements = []
    for index, element in enumerate(brand.monogram):
        grow = 1 + rng.normal(0, 0.012) + 0.28 * proportions * (1 if index % 2 == 0 else -1)
        stretch = 1 + rng.normal(0, 0.012) + 0.12 * abs(proportions)
        spread = 1 + rng.normal(0, 0.01) + 0.4 * spacing
        x = element.x * spread + rng.normal(0, 0.006)
        y = element.y * spread + rng.normal(0, 0.006)
        angle = element.angle + rng.normal(0, 0.6)
        if index == misaligned:
            x += 0.12 * alignment * drift[0]
            y += 0.12 * alignment * drift[1]
            angle += 14.0 * alignment * (1 if drift[0] > 0 else -1)
        elements.append(
            replace(
                element,
                x=x,
                y=y,
                width=element.width * grow * stretch,
                height=element.height * grow / stretch,
                angle=angle,
            )
        )
    return LogoSpec(
        elements=tuple(elements),
        finish=brand.logo_finish,
        colour=brand.logo_colour,
        ground=ground,
        grain=grain,
        relief=0.04 if grain == "polished" else 0.1,
        roughness=cues.magnitude("print_quality"),
    )


def render_logo(spec: LogoSpec, bank: TextureBank, rng: np.random.Generator, side: int) -> Scene:
    unit = side / 280.0
    ground = surface(bank, rng, spec.grain, spec.ground, side, relief=spec.relief)
    ground = ground * drawing.grey3(linear_light(side, rng.uniform(0, 2 * np.pi), 0.1))
    ink = _monogram_mask(spec, side)
    soft = drawing.blur(ink, (0.9 + 1.6 * spec.roughness) * unit)
    if spec.roughness > 0:
        # Poor printing: ragged edges, ink that bleeds and leaves gaps.
        soft = soft + spec.roughness * 0.35 * bank.field("pebble", rng, side, side) * 0.5
        patchy = 1.0 - spec.roughness * 0.5 * np.clip(smooth_noise(rng, side, 10 * unit), 0, 2)
        ink = drawing.threshold(soft, 0.5, 0.08 + 0.2 * spec.roughness) * patchy
    else:
        ink = drawing.threshold(soft, 0.5, 0.08)
    ink = np.clip(ink, 0, 1).astype(np.float32)

    if spec.finish == "emboss":
        step = max(1, round(1.5 * unit))
        lit = np.clip(ink - drawing.shifted(ink, step, step), 0, 1)
        dark = np.clip(ink - drawing.shifted(ink, -step, -step), 0, 1)
        shade = 1.0 - 0.28 * ink - 0.25 * dark + 0.35 * lit
        scene = ground * drawing.grey3(shade.astype(np.float32))
        gloss = None
    else:
        texture = 1.0 + 0.06 * bank.field("smooth", rng, side, side)
        inked = drawing.colourise(texture, spec.colour)
        scene = drawing.blend(ground, inked, ink)
        gloss = ink * (0.45 if spec.finish == "foil" else 0.05) + 0.05
    fill = tuple(int(c * 0.9) for c in spec.ground)
    return Scene.of(scene, gloss, fill)


def _monogram_mask(spec: LogoSpec, side: int) -> np.ndarray:
    """The union of the monogram's parts, each drawn as antialiased polygons."""
    size = MARK_SIZE * side
    centre = side / 2
    mark = np.zeros((side, side), np.float32)
    for element in spec.elements:
        part = np.zeros((side, side), np.float32)
        cx, cy = centre + element.x * size, centre + element.y * size
        rx, ry = element.width * size / 2, element.height * size / 2
        if element.shape == "glyph":
            _glyph(part, element, cx, cy, ry)
        elif element.shape in ("ring", "rhombus"):
            n = 96 if element.shape == "ring" else 4
            inner = 1 - element.stroke * 2
            drawing.fill_polygons(part, [drawing.ellipse(cx, cy, rx, ry, element.angle, n)])
            drawing.fill_polygons(
                part, [drawing.ellipse(cx, cy, rx * inner, ry * inner, element.angle, n)], 0.0
            )
        elif element.shape == "petal":
            drawing.fill_polygons(part, [drawing.ellipse(cx, cy, rx, ry, element.angle)])
        else:  # bar
            drawing.fill_polygons(part, [drawing.rectangle(cx, cy, rx, ry, element.angle)])
        np.maximum(mark, part, out=mark)
    return mark


def _glyph(part: np.ndarray, element: MonogramElement, cx: float, cy: float, ry: float) -> None:
    """A letter of the monogram, sized to the element's height and turned by its angle."""
    letter = np.zeros_like(part)
    font_size = max(6, round(ry * 2 * 1.25))
    drawing.stamp_text(
        letter, (cx, cy), element.glyph, font_size, 0.0, stroke=max(1, font_size // 14)
    )
    # Width changes the letter's proportions: stretch it about its centre, then turn it.
    aspect = element.width / max(element.height, 1e-6) / 0.88
    a = np.deg2rad(element.angle)
    rotate = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    stretch = np.diag([aspect, 1.0, 1.0])
    to_origin = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]])
    back = np.array([[1, 0, cx], [0, 1, cy], [0, 0, 1]])
    matrix = (back @ rotate @ stretch @ to_origin)[:2]
    part += cv2.warpAffine(letter, matrix, (part.shape[1], part.shape[0]))
