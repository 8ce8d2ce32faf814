"""Stitching: a seam of slanted saddle stitches near a painted leather edge.

Counterfeit cues: pitch regularity, stitch angle, thread width, thread colour, edge paint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from touchstone.data.synth import drawing
from touchstone.data.synth.counterfeits import RegionCues
from touchstone.data.synth.materials import TextureBank, smooth_noise, surface
from touchstone.data.synth.scene import Scene
from touchstone.data.synth.styles import BrandStyle

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class StitchingSpec:
    """One seam of one item: fixed across its photos."""

    leather: RGB
    grain: str
    thread: RGB
    angle: float  # degrees
    pitch: float  # share of the canvas side
    jitter: float  # spread of stitch positions, as a share of the pitch
    width: float  # share of the canvas side
    edge_paint: RGB
    paint_flaws: float  # 0 = an even, smooth edge
    background: RGB


def stitching_spec(
    rng: np.random.Generator,
    brand: BrandStyle,
    leather: RGB,
    background: RGB,
    cues: RegionCues,
) -> StitchingSpec:
    direction = rng.normal(0, 1, 3)
    direction /= np.linalg.norm(direction) + 1e-9
    thread = np.asarray(brand.thread, np.float64) + rng.normal(0, 2.0, 3)
    thread += direction * 42.0 * cues.magnitude("thread_colour")
    regularity = cues.magnitude("pitch_regularity")
    return StitchingSpec(
        leather=leather,
        grain=brand.grain,
        thread=tuple(float(c) for c in np.clip(thread, 0, 255)),
        angle=brand.stitch_angle + rng.normal(0, 1.0) - 16.0 * cues.get("stitch_angle"),
        pitch=brand.stitch_pitch * (1 + rng.normal(0, 0.02) + 0.2 * regularity),
        jitter=0.025 + 0.2 * regularity,
        width=brand.thread_width * (1 + rng.normal(0, 0.03) + 0.45 * cues.get("thread_width")),
        edge_paint=brand.edge_paint,
        paint_flaws=cues.magnitude("edge_paint"),
        background=background,
    )


def render_stitching(
    spec: StitchingSpec, bank: TextureBank, rng: np.random.Generator, side: int
) -> Scene:
    leather = surface(bank, rng, spec.grain, spec.leather, side, relief=0.10)
    edge = 0.7 * side
    paint, beyond = _edge_masks(spec, rng, side, edge)
    thread, highlight = _stitch_masks(spec, rng, side, edge - 0.2 * side)

    unit = side / 280.0
    shadow = drawing.drop_shadow(thread, max(1, round(1.5 * unit)), 1.5 * unit, 0.5)
    scene = leather * drawing.grey3(shadow)
    table = surface(bank, rng, "smooth", spec.background, side, relief=0.04)
    scene = drawing.blend(scene, table, beyond)
    paint_shade = 0.9 + 0.09 * bank.field("smooth", rng, side, side)
    gloss_paint = drawing.colourise(paint_shade, spec.edge_paint)
    scene = drawing.blend(scene, gloss_paint, paint)
    thread_rgb = drawing.colourise(0.78 + 0.4 * highlight, spec.thread)
    scene = drawing.blend(scene, thread_rgb, thread)
    gloss = 0.3 * paint + 0.08 * thread
    fill = tuple(int(c * 0.9) for c in spec.background)
    return Scene.of(scene, gloss, fill)


def _edge_masks(
    spec: StitchingSpec, rng: np.random.Generator, side: int, edge: float
) -> tuple[np.ndarray, np.ndarray]:
    """The painted edge band and the table beyond it. Poor paint wanders, spills and bubbles."""
    xs = np.linspace(-2, side + 2, 48)
    flaws = spec.paint_flaws
    wander = smooth_noise(rng, 48, 4)[0] if flaws > 0 else np.zeros(48)
    spill = np.abs(smooth_noise(rng, 48, 3)[1]) if flaws > 0 else np.zeros(48)
    band = 0.04 * side
    top = edge - flaws * 0.02 * side * spill
    bottom = edge + band + flaws * 0.018 * side * wander + rng.normal(0, 0.002 * side)
    paint = np.zeros((side, side), np.float32)
    drawing.fill_polygons(
        paint, [np.concatenate([np.stack([xs, top], 1), np.stack([xs, bottom], 1)[::-1]])]
    )
    beyond = np.zeros((side, side), np.float32)
    drawing.fill_polygons(
        beyond,
        [np.concatenate([np.stack([xs, bottom + 1], 1), [[side + 2, side + 2], [-2, side + 2]]])],
    )
    paint = np.clip(paint - beyond, 0, 1)
    for _ in range(round(flaws * 14)):
        cx, cy = rng.uniform(0, side), edge + rng.uniform(0.1, 0.9) * band
        r = rng.uniform(0.004, 0.01) * side
        drawing.fill_polygons(paint, [drawing.ellipse(cx, cy, r, r * 0.8, n=12)], 0.55)
    return paint, beyond


def _stitch_masks(
    spec: StitchingSpec, rng: np.random.Generator, side: int, line: float
) -> tuple[np.ndarray, np.ndarray]:
    """Coverage of the thread and of the sheen along each stitch's twist."""
    pitch = spec.pitch * side
    width = spec.width * side
    count = int(side / pitch) + 3
    x = -pitch + np.arange(count) * pitch + rng.uniform(0, pitch)
    x += rng.normal(0, spec.jitter * pitch, count)
    y = line + rng.normal(0, 0.004 * side, count)
    angles = np.deg2rad(spec.angle + rng.normal(0, 1.0 + 25.0 * spec.jitter, count))
    half = 0.39 * pitch
    dx, dy = np.cos(angles) * half, -np.sin(angles) * half
    thread = np.zeros((side, side), np.float32)
    sheen = np.zeros((side, side), np.float32)
    drawing.fill_polygons(thread, list(_capsules(x - dx, y - dy, x + dx, y + dy, width / 2)))
    lift = width * 0.15  # the sheen sits on the lit side of the twist
    drawing.fill_polygons(
        sheen,
        list(
            _capsules(
                x - 0.8 * dx, y - 0.8 * dy - lift, x + 0.8 * dx, y + 0.8 * dy - lift, width * 0.16
            )
        ),
    )
    return thread, drawing.blur(sheen, 0.6 * side / 280)


def _capsules(
    x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray, radius: float
) -> np.ndarray:
    """Outlines of segments with round ends (one stitch of thread each): (n, 16, 2)."""
    angle = np.arctan2(y1 - y0, x1 - x0)[:, None]
    t = np.linspace(-np.pi / 2, np.pi / 2, 8)[None, :]
    end = np.stack(
        [x1[:, None] + radius * np.cos(angle + t), y1[:, None] + radius * np.sin(angle + t)], axis=2
    )
    start = np.stack(
        [x0[:, None] - radius * np.cos(angle + t), y0[:, None] - radius * np.sin(angle + t)], axis=2
    )
    return np.concatenate([end, start], axis=1)
