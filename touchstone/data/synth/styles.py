"""Fictional brand styles and categories: what an authentic item of each looks like.

Every number is a nominal value plus the tolerance of honest manufacturing; counterfeit cues
are measured against these (see `counterfeits.py`). Sizes are fractions of the canvas side so
the generator works at any output size.
"""

from __future__ import annotations

from dataclasses import dataclass

RGB = tuple[int, int, int]

# Shares of the trade (docs/domain.md: bags 38%, watches 27%, jewellery 19%), renormalised.
CATEGORY_SHARES: dict[str, float] = {"bag": 0.38, "watch": 0.27, "jewellery": 0.19}
# Jewellery has no seams: its items are photographed on hardware and logo only.
CATEGORY_REGIONS: dict[str, tuple[str, ...]] = {
    "bag": ("hardware", "stitching", "logo"),
    "watch": ("hardware", "stitching", "logo"),
    "jewellery": ("hardware", "logo"),
}
# Hardware outline per category: a bag's plaque, a watch's case back, a jewellery tag.
PLATE_SHAPES: dict[str, str] = {"bag": "plaque", "watch": "disc", "jewellery": "tag"}


@dataclass(frozen=True)
class MonogramElement:
    """One part of a brand monogram, in unit coordinates centred on the mark."""

    shape: str  # ring | rhombus | petal | glyph | bar
    x: float
    y: float
    width: float
    height: float
    angle: float = 0.0  # degrees
    stroke: float = 0.08  # outline thickness as a share of the element's size
    glyph: str = ""


@dataclass(frozen=True)
class BrandStyle:
    name: str
    # hardware
    engraving: str
    plating: RGB
    finish: str  # brushed | polished
    letter_spacing: float  # share of the font size
    # stitching
    leathers: tuple[RGB, ...]
    grain: str  # pebble | smooth | canvas
    thread: RGB
    stitch_angle: float  # degrees from the seam direction
    stitch_pitch: float  # share of the canvas side
    thread_width: float  # share of the canvas side
    edge_paint: RGB
    # logo
    monogram: tuple[MonogramElement, ...]
    logo_finish: str  # foil | print | emboss
    logo_colour: RGB


BRANDS: tuple[BrandStyle, ...] = (
    BrandStyle(
        name="aurel",
        engraving="AUREL",
        plating=(212, 178, 92),
        finish="polished",
        letter_spacing=0.18,
        leathers=((170, 112, 64), (36, 32, 32), (104, 34, 44)),
        grain="pebble",
        thread=(232, 214, 176),
        stitch_angle=28.0,
        stitch_pitch=0.099,
        thread_width=0.032,
        edge_paint=(58, 30, 24),
        monogram=(
            MonogramElement("ring", -0.2, -0.06, 0.56, 0.56, stroke=0.13),
            MonogramElement("ring", 0.2, -0.06, 0.56, 0.56, stroke=0.13),
            MonogramElement("bar", 0.0, 0.36, 0.9, 0.08),
        ),
        logo_finish="foil",
        logo_colour=(214, 180, 96),
    ),
    BrandStyle(
        name="vantelle",
        engraving="VANTELLE",
        plating=(196, 198, 204),
        finish="brushed",
        letter_spacing=0.08,
        leathers=((120, 84, 52), (218, 200, 168), (60, 44, 36)),
        grain="canvas",
        thread=(204, 148, 62),
        stitch_angle=18.0,
        stitch_pitch=0.088,
        thread_width=0.029,
        edge_paint=(112, 36, 28),
        monogram=(
            MonogramElement("glyph", -0.14, 0.0, 0.62, 0.7, glyph="V"),
            MonogramElement("glyph", 0.16, 0.06, 0.62, 0.7, glyph="T"),
            MonogramElement("ring", 0.0, 0.0, 1.0, 1.0, stroke=0.05),
        ),
        logo_finish="emboss",
        logo_colour=(0, 0, 0),
    ),
    BrandStyle(
        name="morceau",
        engraving="MORCEAU",
        plating=(222, 196, 160),
        finish="brushed",
        letter_spacing=0.12,
        leathers=((28, 40, 72), (24, 24, 26), (150, 86, 44)),
        grain="smooth",
        thread=(236, 234, 228),
        stitch_angle=35.0,
        stitch_pitch=0.112,
        thread_width=0.035,
        edge_paint=(20, 20, 22),
        monogram=(
            MonogramElement("rhombus", 0.0, 0.0, 0.95, 0.95, stroke=0.07),
            MonogramElement("glyph", 0.0, 0.02, 0.5, 0.5, glyph="M"),
        ),
        logo_finish="print",
        logo_colour=(238, 236, 230),
    ),
    BrandStyle(
        name="kestrel",
        engraving="KESTREL",
        plating=(172, 176, 182),
        finish="polished",
        letter_spacing=0.22,
        leathers=((52, 78, 58), (138, 120, 100), (84, 70, 62)),
        grain="pebble",
        thread=(176, 160, 130),
        stitch_angle=22.0,
        stitch_pitch=0.093,
        thread_width=0.027,
        edge_paint=(34, 46, 36),
        monogram=(
            MonogramElement("petal", 0.0, -0.3, 0.2, 0.4, angle=0.0),
            MonogramElement("petal", 0.3, 0.0, 0.2, 0.4, angle=90.0),
            MonogramElement("petal", 0.0, 0.3, 0.2, 0.4, angle=0.0),
            MonogramElement("petal", -0.3, 0.0, 0.2, 0.4, angle=90.0),
            MonogramElement("ring", 0.0, 0.0, 0.16, 0.16, stroke=0.5),
        ),
        logo_finish="foil",
        logo_colour=(200, 202, 208),
    ),
)
BRANDS_BY_NAME = {brand.name: brand for brand in BRANDS}

# Table tops and backdrops that members photograph on.
BACKGROUNDS: tuple[RGB, ...] = (
    (236, 234, 230),
    (200, 196, 188),
    (150, 120, 92),
    (90, 86, 84),
    (226, 216, 198),
    (60, 60, 64),
)
