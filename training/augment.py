"""Augmentation recipes, registered by name and built in one place (albumentations).

Chosen for phone photos of region crops: perspective, small rotations and framing, lighting,
blur, sensor noise, JPEG. Left out on purpose: flips (they mirror engraved text and the slant
of stitches, both cues), strong hue shifts (thread and plating colour are cues), and crops that
could cut a cue out of the frame.
"""

from __future__ import annotations

from collections.abc import Callable

import albumentations as A
import cv2

Recipe = Callable[[int], A.Compose]
_RECIPES: dict[str, Recipe] = {}


def register_recipe(name: str) -> Callable[[Recipe], Recipe]:
    def decorate(builder: Recipe) -> Recipe:
        _RECIPES[name] = builder
        return builder

    return decorate


def list_recipes() -> list[str]:
    return sorted(_RECIPES)


def create_augmentation(name: str, size: int, seed: int) -> A.Compose:
    """The named recipe, ending at `size` x `size`, with its own seeded random stream."""
    if name not in _RECIPES:
        raise ValueError(f"unknown augmentation {name!r}; known: {', '.join(list_recipes())}")
    compose = _RECIPES[name](size)
    compose.set_random_seed(seed)
    return compose


@register_recipe("none")
def _none(size: int) -> A.Compose:
    return A.Compose([A.Resize(size, size, interpolation=cv2.INTER_AREA)])


@register_recipe("phone")
def _phone(size: int) -> A.Compose:
    # Resizing first makes every later step cheaper: the loader must never starve the model.
    return A.Compose(
        [
            A.Resize(size, size, interpolation=cv2.INTER_AREA),
            A.Perspective(scale=(0.02, 0.05), p=0.5),
            A.Affine(
                scale=(0.9, 1.1),
                rotate=(-8, 8),
                translate_percent=(-0.04, 0.04),
                border_mode=cv2.BORDER_REFLECT_101,
                p=0.8,
            ),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.7),
            A.RandomGamma(gamma_limit=(85, 115), p=0.3),
            A.OneOf(
                [
                    A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.2, 1.2)),
                    A.MotionBlur(blur_limit=(3, 5)),
                ],
                p=0.3,
            ),
            A.GaussNoise(std_range=(0.01, 0.04), p=0.3),
            A.HueSaturationValue(hue_shift_limit=3, sat_shift_limit=8, val_shift_limit=0, p=0.3),
            A.ImageCompression(quality_range=(50, 95), p=0.5),
        ]
    )
