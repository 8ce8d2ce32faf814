"""A photo's crop box, in pixels of the upright photo, as manifests and the service give it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BBox:
    """A crop box in pixels of the upright (EXIF-rotated) photo; x1 and y1 are exclusive."""

    x0: int
    y0: int
    x1: int
    y1: int

    @classmethod
    def parse(cls, text: str) -> BBox:
        """Parse `x0,y0,x1,y1`; raise ValueError with a reason a person can act on."""
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 4:
            raise ValueError(f"bbox {text!r} needs four numbers x0,y0,x1,y1")
        try:
            numbers = [float(p) for p in parts]
        except ValueError as exc:
            raise ValueError(f"bbox {text!r} holds something that is not a number") from exc
        if any(not np.isfinite(n) or n != int(n) for n in numbers):
            raise ValueError(f"bbox {text!r} must hold whole pixel numbers")
        x0, y0, x1, y1 = (int(n) for n in numbers)
        if min(x0, y0) < 0:
            raise ValueError(f"bbox {text!r} has a negative coordinate")
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"bbox {text!r} is empty: x1 must exceed x0 and y1 must exceed y0")
        return cls(x0, y0, x1, y1)

    def fits(self, width: int, height: int) -> bool:
        return self.x1 <= width and self.y1 <= height

    def __str__(self) -> str:
        return f"{self.x0},{self.y0},{self.x1},{self.y1}"
