"""Why a photo cannot be used, in words the API, the data tools and training share."""

from __future__ import annotations


class PhotoError(ValueError):
    """A photo that cannot be used. `code` is stable and becomes the API's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
