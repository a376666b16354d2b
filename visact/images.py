"""Images on the wire: raw RGB bytes with their shape, or PNG. Never JSON, never base64."""

from __future__ import annotations

import io
import os
import struct
import threading
import weakref
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar, cast

import numpy as np
from PIL import Image as PILImage

from visact.env.v1 import env_pb2 as pb

RAW = pb.IMAGE_ENCODING_RAW_RGB
PNG = pb.IMAGE_ENCODING_PNG
ENCODING_NAMES = {"raw": RAW, "png": PNG}

T = TypeVar("T")
R = TypeVar("R")


class ImageDecodeError(ValueError):
    """The image's bytes do not match its declared encoding or shape."""


def unchangeable(frame: np.ndarray) -> bool:
    """Whether ``frame`` cannot change: read-only and owning its memory (a read-only view of
    another array changes with it)."""
    return not frame.flags.writeable and frame.base is None


def encode(array: np.ndarray, encoding: int) -> pb.Image:
    """An (H, W, 3) uint8 array as a new ``Image`` message in ``encoding``."""
    message = pb.Image()
    encode_into(array, encoding, message)
    return message


def encode_into(array: np.ndarray, encoding: int, out: pb.Image) -> None:
    """Write an (H, W, 3) uint8 array into the ``Image`` message ``out`` (no intermediate message)."""
    if describe_into(array, encoding, out) == PNG:
        out.data = png_bytes(array)
    else:
        out.data = np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def describe_into(array: np.ndarray, encoding: int, out: pb.Image) -> int:
    """Set ``out``'s encoding and shape for ``array`` (not its bytes); returns the encoding used."""
    height, width, channels = array.shape
    encoding = PNG if encoding == PNG else RAW
    out.encoding = cast(pb.ImageEncoding, encoding)
    out.height, out.width, out.channels = height, width, channels
    return encoding


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOR_TYPES = {3: 2, 4: 6}  # channels -> PNG colour type (truecolour, truecolour with alpha)


def png_bytes(array: np.ndarray) -> bytes:
    """A PNG file of an (H, W, 3) uint8 array (any array Pillow takes, too).

    RGB and RGBA uint8 images are written here: every row with PNG's filter type 0 (none) and
    zlib level 1. Pillow picks a filter per row, which costs ~1.5 ms on a 300x300 frame and
    buys little on the flat synthetic frames games draw: measured on the four built-in games,
    0.4-0.5 ms instead of 1.7-2.9 ms per frame, files from 4% smaller to 10% larger than
    Pillow's at compress_level=1, and quicker to decode. Other arrays go through Pillow.
    """
    return png_later(array)()


def png_later(array: np.ndarray) -> Callable[[], bytes]:
    """:func:`png_bytes` in two halves: the pixels are copied now, the slow part (zlib) runs
    when the returned function is called, on any thread (zlib lets go of the GIL)."""
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in _PNG_COLOR_TYPES or not array.size:
        kept = np.array(array, copy=True)

        def through_pillow() -> bytes:
            buffer = io.BytesIO()
            PILImage.fromarray(kept).save(buffer, format="PNG", compress_level=1)
            return buffer.getvalue()

        return through_pillow
    height, width, channels = array.shape
    rows = np.empty((height, 1 + width * channels), dtype=np.uint8)
    rows[:, 0] = 0  # filter type: none
    rows[:, 1:] = array.reshape(height, width * channels)
    header = struct.pack(">IIBBBBB", width, height, 8, _PNG_COLOR_TYPES[channels], 0, 0, 0)

    def compress() -> bytes:
        return b"".join(
            (
                _PNG_SIGNATURE,
                _png_chunk(b"IHDR", header),
                _png_chunk(b"IDAT", zlib.compress(rows.data, 1)),
                _png_chunk(b"IEND", b""),
            )
        )

    return compress


def max_encoded_bytes(shape: tuple[int, int, int]) -> int:
    """The most bytes one frame of ``shape`` takes in any encoding offered: raw, or PNG at its
    worst (incompressible pixels: zlib's stored blocks, per-row filter bytes, chunk framing)."""
    height, width, channels = shape
    raw = height * width * channels
    rows = height * (1 + width * channels)
    deflated = rows + (rows >> 12) + (rows >> 14) + (rows >> 25) + 13  # zlib's compressBound
    framing = len(_PNG_SIGNATURE) + 13 + 12 * (3 + deflated // 8192)  # IHDR, IEND, IDAT chunks
    return max(raw, deflated + framing)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return b"".join(
        (
            struct.pack(">I", len(payload)),
            kind,
            payload,
            struct.pack(">I", zlib.crc32(payload, zlib.crc32(kind))),
        )
    )


def _plain_png_rgb(data: bytes) -> np.ndarray | None:
    """The pixels of a PNG as :func:`png_bytes` writes it (8-bit RGB, not interlaced, filter
    type 0 on every row, every CRC right, no critical chunk besides IHDR/IDAT/IEND), or None
    for any other PNG and any damage: those go through Pillow, with its checks and messages."""
    if not data.startswith(_PNG_SIGNATURE):
        return None
    view, position, header, parts = memoryview(data), len(_PNG_SIGNATURE), None, []
    while True:
        if position + 12 > len(data):
            return None
        (length,) = struct.unpack_from(">I", data, position)
        kind, end = data[position + 4 : position + 8], position + 8 + length
        if end + 4 > len(data):
            return None
        payload = view[position + 8 : end]
        if zlib.crc32(payload, zlib.crc32(kind)) != struct.unpack_from(">I", data, end)[0]:
            return None
        if kind == b"IHDR" and header is None and length == 13:
            header = struct.unpack(">IIBBBBB", payload)
        elif kind == b"IDAT" and header is not None:
            parts.append(payload)
        elif kind == b"IEND":
            break
        elif not kind[0] & 0x20:  # a critical chunk this fast path does not know (PLTE...)
            return None
        position = end + 4
    if header is None:
        return None
    width, height, depth, color_type, compression, filtering, interlace = header
    stride, pixels = 1 + 3 * width, width * height
    if (depth, color_type, compression, filtering, interlace) != (8, 2, 0, 0, 0) or not pixels:
        return None
    if pixels > (PILImage.MAX_IMAGE_PIXELS or pixels):  # Pillow's decompression-bomb rules apply
        return None
    try:
        raw = zlib.decompressobj().decompress(b"".join(parts), height * stride + 1)
    except zlib.error:
        return None
    if len(raw) != height * stride:
        return None
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(height, stride)
    if rows[:, 0].any():  # a row with a filter: leave it to Pillow
        return None
    array = np.ascontiguousarray(rows[:, 1:]).reshape(height, width, 3)
    array.setflags(write=False)  # like the raw path's and Pillow's arrays
    return array


def decode_png(data: bytes) -> np.ndarray:
    """A PNG file's pixels as an (H, W, 3) uint8 array; raises ImageDecodeError."""
    array = _plain_png_rgb(data)  # what png_bytes writes: ~3x quicker than through Pillow
    if array is not None:
        return array
    try:
        with PILImage.open(io.BytesIO(data)) as pil:
            return np.asarray(pil.convert("RGB"))
    except Exception as exc:  # PIL raises many types for bad bytes
        raise ImageDecodeError(f"PNG image could not be decoded: {exc}") from exc


def decode(image: pb.Image, pngs: DecodedPngs | None = None) -> np.ndarray:
    """The ``Image`` message as an (H, W, C) uint8 array; raises ImageDecodeError on a mismatch.
    PNGs go through ``pngs`` when given (the same bytes decoded once)."""
    return decode_parts(image.encoding, image.data, image.height, image.width, image.channels, pngs)


def decode_parts(
    encoding: int, data: bytes, height: int, width: int, channels: int, pngs: DecodedPngs | None = None
) -> np.ndarray:
    """:func:`decode` of an ``Image`` message's fields (each field read once: upb copies
    ``data`` on every read); PNGs through ``pngs`` when given (the same bytes decoded once)."""
    h, w, c = height, width, channels or 3
    if encoding in (RAW, pb.IMAGE_ENCODING_UNSPECIFIED):
        expected = h * w * c
        if h <= 0 or w <= 0 or len(data) != expected:
            raise ImageDecodeError(
                f"raw image declared {h}x{w}x{c} = {expected} bytes but carries {len(data)} bytes"
            )
        return np.frombuffer(data, dtype=np.uint8).reshape(h, w, c)
    if encoding == PNG:
        array = pngs.decode(data) if pngs is not None else decode_png(data)
        if (h or w) and array.shape[:2] != (h, w):
            raise ImageDecodeError(
                f"PNG image declared {h}x{w} but decodes to {array.shape[0]}x{array.shape[1]}"
            )
        return array
    raise ImageDecodeError(f"unknown image encoding {encoding}; expected RAW_RGB (1) or PNG (2)")


def parallel_map(function: Callable[[T], R], items: Sequence[T]) -> list[R | BaseException]:
    """``function`` of every item, on up to :data:`IMAGE_THREADS` threads when there are several;
    an item that raised gives its exception. For the PNG work of a batch: zlib lets go of the
    GIL while it (de)compresses, so one batch's images use every core."""
    pool = _image_pool() if len(items) > 1 else None

    def call(item: T) -> R | BaseException:
        try:
            return function(item)
        except Exception as exc:
            return exc

    return list(pool.map(call, items)) if pool is not None else [call(item) for item in items]


#: Threads that encode or decode the PNG images of one batch (none on a single core).
IMAGE_THREADS = min(4, os.cpu_count() or 1)
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _image_pool() -> ThreadPoolExecutor | None:
    global _pool
    if IMAGE_THREADS < 2:
        return None
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=IMAGE_THREADS, thread_name_prefix="png")
        return _pool


class PngCache:
    """PNG files of frames an environment shows again, so that each is compressed once.

    An entry belongs to one ndarray *object* and is used only for that very object while it is
    alive, read-only and owns its memory (no writable base it could change through): what an
    environment hands out when it keeps its drawn frames frozen, as every built-in game does
    (``visact.env_server.render.frame_cache``). Any other frame is encoded every time, so a frame that
    may change can never get stale bytes. Thread-safe; least recently used entries go first.
    """

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._entries: OrderedDict[int, tuple[weakref.ref[np.ndarray], bytes]] = OrderedDict()
        self._lock = threading.RLock()  # the weakref callback may run under it (a collection)
        self.hits = self.misses = 0

    @staticmethod
    def cacheable(frame: np.ndarray) -> bool:
        return unchangeable(frame)

    def get(self, frame: np.ndarray) -> bytes | None:
        """The PNG of ``frame`` if this very object was encoded before, else None."""
        if not self.size or not self.cacheable(frame):
            return None
        with self._lock:
            entry = self._entries.get(id(frame))
            if entry is not None and entry[0]() is frame:
                self._entries.move_to_end(id(frame))
                self.hits += 1
                return entry[1]
            self.misses += 1
            return None

    def put(self, frame: np.ndarray, data: bytes) -> None:
        """Remember ``data`` as the PNG of ``frame`` (only if the frame cannot change)."""
        if not self.size or not self.cacheable(frame):
            return
        key = id(frame)
        with self._lock:
            self._entries[key] = (weakref.ref(frame, lambda _ref: self._forget(key, _ref)), data)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def _forget(self, key: int, ref: weakref.ref[np.ndarray]) -> None:
        """The frame was freed: drop its entry (its id may be reused by another array)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] is ref:
                del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)


class DecodedPngs:
    """The pixels of PNG files a client has decoded, keyed by the files' exact bytes.

    A server that keeps the PNG of each frame it shows again (``PngCache``) sends the very same
    bytes whenever a state comes back, so a client can skip decoding them: a lookup of ~11 KB of
    bytes costs a few microseconds, a decode ~170 us. The key is the whole file, compared byte for
    byte, so a hit is always the right image. Arrays handed out are read-only (they are shared by
    every hit). Bounded by ``max_bytes`` (pixels + files; ~240 frames of 300x300 in 64 MiB);
    least recently used entries go first; 0 turns it off. Thread-safe.
    """

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = self.misses = 0

    def decode(self, data: bytes) -> np.ndarray:
        """:func:`decode_png` of ``data``, from the cache when these bytes were decoded before."""
        if self.max_bytes <= 0:
            return decode_png(data)
        with self._lock:
            array = self._entries.get(data)
            if array is not None:
                self._entries.move_to_end(data)
                self.hits += 1
                return array
            self.misses += 1
        array = decode_png(data)  # outside the lock: a batch decodes on several threads
        array.setflags(write=False)  # a fresh array: shared by every hit from now on
        cost = array.nbytes + len(data)
        if cost > self.max_bytes:
            return array  # larger than the whole cache: not kept
        with self._lock:
            if data not in self._entries:  # another thread may have decoded the same file
                self._entries[data] = array
                self.bytes += cost
            while self.bytes > self.max_bytes:
                key, old = self._entries.popitem(last=False)
                self.bytes -= old.nbytes + len(key)
        return array

    def __len__(self) -> int:
        return len(self._entries)
