"""Augmentation recipes, registered by name and built in one place (albumentations).

A recipe starts from the photo as training caches it (decoded, upright, cropped to its bbox,
shorter side resized to `shorter_side(prep)`: the first half of the serving transform) and ends
at `input_size` x `input_size`. Serving then takes the centre square; so the recipes stay near
that square, or the model would learn from framings it never sees in service (squashing a 4:3
frame into a square, as training once did, shows it bands that serving crops away and
stretches every cue by a third).

`phone` imitates the small differences between two phone photos of the same region:
- framing: a random square of 0.85 to 1.0 of the serving crop's area, its centre moved a
  little, resized to input_size (a person holding the phone a bit closer or off-centre);
- pose: a few degrees of rotation, +-5% scale, +-2% shift and a slight perspective, applied to
  the whole cached frame first, so that the corners they bring into the crop are real photo
  pixels wherever the frame is larger than the crop (reflected pixels elsewhere);
- light: brightness and contrast +-10%, a little gamma, a tiny hue and saturation shift.
Left out on purpose: flips (they mirror engraved text and the slant of stitches, both cues);
strong blur, heavy noise and JPEG down to low quality (they erase the fine cues the model must
read: the photos are already JPEGs, decoded at a reduced scale); strong hue shifts (thread and
plating colour are cues); crops far from the centre (they can cut a cue out of the frame).

`none` is augmentation off: exactly the serving transform's crop.
"""

from __future__ import annotations

from collections.abc import Callable

import albumentations as A
import cv2

from touchstone.preprocessing import Preprocessing, shorter_side

Recipe = Callable[[Preprocessing], A.Compose]
_RECIPES: dict[str, Recipe] = {}

# The random crop's square stays inside a centre square this much larger than the serving crop
# (where the photo has room): its centre moves by at most 4% of the crop at full size, 8% at
# the smallest.
_FRAMING_MARGIN = 1.08
_SMALLEST_AREA = 0.85
_CV2_INTERPOLATION = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


def register_recipe(name: str) -> Callable[[Recipe], Recipe]:
    def decorate(builder: Recipe) -> Recipe:
        _RECIPES[name] = builder
        return builder

    return decorate


def list_recipes() -> list[str]:
    return sorted(_RECIPES)


def create_augmentation(name: str, prep: Preprocessing, seed: int) -> A.Compose:
    """The named recipe for a model's preprocessing, from a cached photo (shorter side
    `shorter_side(prep)`) to `input_size` x `input_size`, with its own seeded random stream."""
    if name not in _RECIPES:
        raise ValueError(f"unknown augmentation {name!r}; known: {', '.join(list_recipes())}")
    compose = _RECIPES[name](prep)
    compose.set_random_seed(seed)
    return compose


@register_recipe("none")
def _none(prep: Preprocessing) -> A.Compose:
    # The serving transform's centre crop, to the pixel (same coordinates as centre_crop).
    return A.Compose([A.CenterCrop(prep.input_size, prep.input_size)])


@register_recipe("phone")
def _phone(prep: Preprocessing) -> A.Compose:
    size = prep.input_size
    room = min(shorter_side(prep), round(size * _FRAMING_MARGIN))
    full = (size / room) ** 2  # the serving crop's area, as a share of the room's
    interpolation = _CV2_INTERPOLATION[prep.interpolation]
    return A.Compose(
        [
            A.Affine(
                scale=(0.95, 1.05),
                rotate=(-4, 4),
                translate_percent=(-0.02, 0.02),
                interpolation=interpolation,
                border_mode=cv2.BORDER_REFLECT_101,
                p=0.7,
            ),
            A.Perspective(
                scale=(0.01, 0.03),
                interpolation=interpolation,
                border_mode=cv2.BORDER_REFLECT_101,
                p=0.3,
            ),
            A.CenterCrop(room, room),
            A.RandomResizedCrop(
                size=(size, size),
                scale=(_SMALLEST_AREA * full, full),
                ratio=(1.0, 1.0),  # the aspect ratio of the cues stays as photographed
                interpolation=interpolation,
            ),
            A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.7),
            A.RandomGamma(gamma_limit=(92, 108), p=0.3),
            A.HueSaturationValue(hue_shift_limit=2, sat_shift_limit=5, val_shift_limit=0, p=0.3),
        ]
    )
