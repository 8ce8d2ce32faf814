"""A rendered region of one physical item, before the camera sees it."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Scene:
    """`planes` holds the lit surface (channels 0-2, float32, 0..255) and, in channel 3, where
    a specular highlight may fall (0..1): highlights move from photo to photo as the phone
    moves. Keeping both in one array lets the camera warp them in a single pass."""

    planes: np.ndarray
    fill: tuple[int, int, int]

    @classmethod
    def of(cls, base: np.ndarray, gloss: np.ndarray | None, fill: tuple[int, ...]) -> Scene:
        if gloss is None:
            gloss = np.zeros(base.shape[:2], np.float32)
        planes = cv2.merge(
            [*cv2.split(base.astype(np.float32, copy=False)), gloss.astype(np.float32)]
        )
        return cls(planes, (int(fill[0]), int(fill[1]), int(fill[2])))

    @property
    def side(self) -> int:
        return int(self.planes.shape[0])
