"""Shared Pillow drawing for the games: fonts, text, playing cards, and array conversion.

Everything here is built for legibility after heavy downscaling (a tiny VLM sees the
300x300 frames at 64-128 px): large sans-serif glyphs from the font that ships with
Pillow (``ImageFont.load_default(size=N)``, no asset files), high contrast, plain
backgrounds. Fonts, backgrounds and finished frames are cached: games render the same
few states again and again.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from functools import lru_cache
from typing import TypeVar

import numpy as np
from PIL import Image, ImageDraw, ImageFont

RGB = tuple[int, int, int]
Box = tuple[int, int, int, int]  # left, top, right, bottom (inclusive right/bottom, as Pillow draws)

WHITE: RGB = (255, 255, 255)
BLACK: RGB = (0, 0, 0)
RED: RGB = (200, 0, 0)
FELT: RGB = (20, 90, 50)
CARD_BACK: RGB = (40, 70, 170)
LIGHT_TEXT: RGB = (245, 245, 220)

RED_SUITS = frozenset({"H", "D"})

StateT = TypeVar("StateT", bound=Hashable)


@lru_cache(maxsize=64)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled scalable sans-serif font at ``size`` px (cached)."""
    return ImageFont.load_default(size=size)


@lru_cache(maxsize=16)
def _background(size: tuple[int, int], color: RGB) -> Image.Image:
    return Image.new("RGB", size, color)


def canvas(size: tuple[int, int], color: RGB) -> Image.Image:
    """A fresh plain image of ``size`` (width, height), copied from a cached background."""
    return _background(size, color).copy()


def text(
    draw: ImageDraw.ImageDraw,
    xy: tuple[int, int],
    content: str,
    size: int,
    fill: RGB,
    anchor: str = "mm",
    bold: bool = True,
) -> None:
    """Draw ``content`` at ``xy``; ``anchor`` as in Pillow (``"mm"``: centred, ``"lm"``: left middle).

    ``bold`` thickens the strokes (by about size/25 px) so glyphs survive downscaling.
    """
    stroke = max(1, size // 25) if bold else 0
    draw.text(xy, content, font=font(size), fill=fill, anchor=anchor, stroke_width=stroke, stroke_fill=fill)


def fitting_size(content: str, max_width: int, max_height: int, largest: int = 200) -> int:
    """The largest font size at which ``content`` fits in ``max_width`` x ``max_height``."""
    return _fitting_size(content, max_width, max_height, largest)


@lru_cache(maxsize=512)
def _fitting_size(content: str, max_width: int, max_height: int, largest: int) -> int:
    for size in range(largest, 5, -1):
        left, top, right, bottom = font(size).getbbox(content)
        if right - left <= max_width and bottom - top <= max_height:
            return size
    return 6


def suit_color(suit: str) -> RGB:
    """Red for hearts and diamonds, black for spades and clubs."""
    return RED if suit in RED_SUITS else BLACK


def draw_suit(draw: ImageDraw.ImageDraw, center: tuple[int, int], size: int, suit: str) -> None:
    """A small suit symbol (S, H, D, C) drawn with shapes, ``size`` px across."""
    x, y = center
    r = size // 2
    color = suit_color(suit)
    if suit == "D":
        draw.polygon([(x, y - r), (x + r * 3 // 4, y), (x, y + r), (x - r * 3 // 4, y)], fill=color)
    elif suit == "H":
        q = r // 2
        draw.ellipse((x - r, y - r, x, y), fill=color)
        draw.ellipse((x, y - r, x + r, y), fill=color)
        draw.polygon([(x - r, y - q + 1), (x + r, y - q + 1), (x, y + r)], fill=color)
    elif suit == "S":
        q = r // 2
        draw.ellipse((x - r, y - q, x, y + q), fill=color)
        draw.ellipse((x, y - q, x + r, y + q), fill=color)
        draw.polygon([(x - r, y), (x + r, y), (x, y - r)], fill=color)
        draw.polygon([(x, y), (x - q, y + r), (x + q, y + r)], fill=color)
    else:  # clubs
        t = r * 2 // 3
        draw.ellipse((x - t // 2, y - r, x + t // 2, y - r + t), fill=color)
        draw.ellipse((x - r, y - t // 2, x - r + t, y + t // 2), fill=color)
        draw.ellipse((x + r - t, y - t // 2, x + r, y + t // 2), fill=color)
        draw.polygon([(x, y), (x - r // 2, y + r), (x + r // 2, y + r)], fill=color)


def paste_card(image: Image.Image, box: Box, rank: str, suit: str, background: RGB = FELT) -> None:
    """Put a face-up card (see :func:`card_sprite`) into ``box`` of ``image``, over ``background``."""
    left, top, right, bottom = box
    image.paste(card_sprite(rank, suit, right - left, bottom - top, background), (left, top))


def paste_card_back(image: Image.Image, box: Box, background: RGB = FELT) -> None:
    """Put a face-down card (see :func:`card_back_sprite`) into ``box`` of ``image``, over ``background``."""
    left, top, right, bottom = box
    image.paste(card_back_sprite(right - left, bottom - top, background), (left, top))


@lru_cache(maxsize=2048)
def card_sprite(rank: str, suit: str, width: int, height: int, background: RGB = FELT) -> Image.Image:
    """A face-up card as an RGB image with ``background`` outside its rounded corners (cached).

    White rounded rectangle with the rank as the dominant centred glyph; the suit is a
    small symbol in the top-left corner and sets the rank's colour. A wide rank ("10")
    on a narrow card is squeezed horizontally rather than shrunk. Sprites are opaque
    because an opaque paste is ~10x faster than an alpha-masked one.
    """
    sprite = Image.new("RGB", (width + 1, height + 1), background)
    draw = ImageDraw.Draw(sprite)
    draw.rounded_rectangle(
        (0, 0, width, height), radius=max(3, width // 10), fill=WHITE, outline=BLACK, width=2
    )
    corner = max(10, min(width, height) // 5)
    inset = 4 + corner // 2
    draw_suit(draw, (inset, inset), corner, suit)
    mask = glyph_mask(rank, width - 2 * max(4, width // 12), height - 2 * (corner + 2))
    x = (width - mask.width) // 2
    y = (height - mask.height) // 2 + corner // 3
    draw.bitmap((x, y), mask, fill=suit_color(suit))
    return sprite


@lru_cache(maxsize=64)
def card_back_sprite(width: int, height: int, background: RGB = FELT) -> Image.Image:
    """A face-down card as an RGB image: plain blue with a white inner frame (cached)."""
    sprite = Image.new("RGB", (width + 1, height + 1), background)
    draw = ImageDraw.Draw(sprite)
    radius = max(3, width // 10)
    draw.rounded_rectangle((0, 0, width, height), radius=radius, fill=CARD_BACK, outline=BLACK, width=2)
    pad = max(4, width // 8)
    draw.rounded_rectangle((pad, pad, width - pad, height - pad), radius=radius, outline=WHITE, width=3)
    return sprite


@lru_cache(maxsize=1024)
def glyph_mask(content: str, max_width: int, max_height: int, max_squeeze: float = 1.35) -> Image.Image:
    """A bold "L" mask of ``content`` as tall as fits ``max_height``, squeezed to ``max_width`` if needed.

    The glyph may be up to ``max_squeeze`` times too wide before it is shrunk instead.
    """
    size = fitting_size(content, int(max_width * max_squeeze), max_height, largest=min(max_height * 2, 200))
    stroke = max(1, size // 25)
    left, top, right, bottom = (int(v) for v in font(size).getbbox(content, stroke_width=stroke))
    mask = Image.new("L", (right - left, bottom - top), 0)
    ImageDraw.Draw(mask).text(
        (-left, -top), content, font=font(size), fill=255, stroke_width=stroke, stroke_fill=255
    )
    if mask.width > max_width:
        mask = mask.resize((max_width, mask.height), Image.Resampling.LANCZOS)
    return mask


def frozen_array(image: Image.Image) -> np.ndarray:
    """The image as a read-only (H, W, 3) uint8 array, safe to keep in a cache."""
    array = np.array(image.convert("RGB"), dtype=np.uint8)
    array.setflags(write=False)
    return array


def frame_cache(maxsize: int) -> Callable[[Callable[[StateT], np.ndarray]], Callable[[StateT], np.ndarray]]:
    """Decorate ``draw(state) -> array`` so each state is drawn once.

    ``draw`` must return :func:`frozen_array`: callers get the cached frame itself, read-only
    (copy it to draw on it). Being the same frozen object every time is what lets the server
    send a state's PNG again without compressing it again (``images.PngCache``).
    """

    def decorate(draw: Callable[[StateT], np.ndarray]) -> Callable[[StateT], np.ndarray]:
        cached = lru_cache(maxsize=maxsize)(draw)

        def frame(state: StateT) -> np.ndarray:
            array = cached(state)
            if array.flags.writeable:
                raise TypeError(f"{draw.__name__} must return a read-only array (render.frozen_array)")
            return array

        frame.__doc__ = draw.__doc__
        return frame

    return decorate
