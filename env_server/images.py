"""Images on the wire: raw RGB bytes with their shape, or PNG. Never JSON, never base64."""

from __future__ import annotations

import io
from typing import cast

import numpy as np
from PIL import Image as PILImage

from visact.env.v1 import env_pb2 as pb

RAW = pb.IMAGE_ENCODING_RAW_RGB
PNG = pb.IMAGE_ENCODING_PNG
ENCODING_NAMES = {"raw": RAW, "png": PNG}


class ImageDecodeError(ValueError):
    """The image's bytes do not match its declared encoding or shape."""


def encode(array: np.ndarray, encoding: int) -> pb.Image:
    """An (H, W, 3) uint8 array as a new ``Image`` message in ``encoding``."""
    message = pb.Image()
    encode_into(array, encoding, message)
    return message


def encode_into(array: np.ndarray, encoding: int, out: pb.Image) -> None:
    """Write an (H, W, 3) uint8 array into the ``Image`` message ``out`` (no intermediate message)."""
    height, width, channels = array.shape
    if encoding == PNG:
        buffer = io.BytesIO()
        # compress_level=1: ~5x faster than the default for a few % more bytes.
        PILImage.fromarray(array).save(buffer, format="PNG", compress_level=1)
        out.data = buffer.getvalue()
    else:
        encoding = RAW
        out.data = np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    out.encoding = cast(pb.ImageEncoding, encoding)
    out.height, out.width, out.channels = height, width, channels


def decode(image: pb.Image) -> np.ndarray:
    """The ``Image`` message as an (H, W, C) uint8 array; raises ImageDecodeError on a mismatch."""
    h, w, c = image.height, image.width, image.channels or 3
    if image.encoding in (RAW, pb.IMAGE_ENCODING_UNSPECIFIED):
        expected = h * w * c
        if h <= 0 or w <= 0 or len(image.data) != expected:
            raise ImageDecodeError(
                f"raw image declared {h}x{w}x{c} = {expected} bytes but carries {len(image.data)} bytes"
            )
        return np.frombuffer(image.data, dtype=np.uint8).reshape(h, w, c)
    if image.encoding == PNG:
        try:
            with PILImage.open(io.BytesIO(image.data)) as pil:
                array = np.asarray(pil.convert("RGB"))
        except Exception as exc:  # PIL raises many types for bad bytes
            raise ImageDecodeError(f"PNG image could not be decoded: {exc}") from exc
        if (h or w) and array.shape[:2] != (h, w):
            raise ImageDecodeError(
                f"PNG image declared {h}x{w} but decodes to {array.shape[0]}x{array.shape[1]}"
            )
        return array
    raise ImageDecodeError(f"unknown image encoding {image.encoding}; expected RAW_RGB (1) or PNG (2)")
