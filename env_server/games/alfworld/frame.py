"""The 300x300 frame of an ALFWorld game, drawn with Pillow (no asset files).

- Top: the receptacle the agent faces, by name, with an OPEN / CLOSED badge when it opens
  ("middle of the room" before the first move).
- Middle: what is in or on it, one tile per object: an icon (shape by what the object is, colour
  by its type), its name ("apple 2") and a badge per state: HOT, COLD, CLEAN, SLICED, ON. A closed
  receptacle shows its doors and hides its contents; an empty one says so.
- Bottom left: the held object as a tile, or "nothing".
- Bottom right: a top-down map of the room: the floor grid, every receptacle as a square (grey:
  not visited yet, blue: visited, green: open, orange ring: the one faced) and the agent as a red
  triangle pointing where it faces (a dot in the middle of the room before the first move).

Frames are cached by their content (``render.frame_cache``): a state seen again is the same frozen
array, which the server sends again without re-encoding.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from visact.env_server import render
from visact.env_server.games.alfworld.rooms import HEADINGS, Room, load_room
from visact.env_server.games.alfworld.scenes import start_point

SIZE = 300
HEADER = (0, 0, SIZE - 1, 33)
PANEL = (4, 38, SIZE - 5, 197)
HOLDING = (4, 202, 118, SIZE - 5)
MAP = (122, 202, SIZE - 5, SIZE - 5)

INK: render.RGB = (30, 30, 36)
HEADER_FILL: render.RGB = (44, 52, 74)
PANEL_FILL: render.RGB = (238, 232, 218)
BOX_FILL: render.RGB = (250, 249, 245)
MUTED: render.RGB = (120, 120, 128)
FLOOR: render.RGB = (214, 214, 206)
MAP_FILL: render.RGB = (246, 246, 242)
UNVISITED: render.RGB = (150, 150, 150)
VISITED: render.RGB = (46, 92, 196)
OPENED: render.RGB = (40, 160, 70)
FACED: render.RGB = (245, 140, 0)
AGENT: render.RGB = (220, 30, 30)
DOOR: render.RGB = (176, 150, 116)
BADGES: dict[str, tuple[str, render.RGB]] = {
    "hot": ("HOT", (214, 40, 30)),
    "cold": ("COLD", (30, 110, 220)),
    "clean": ("CLEAN", (0, 150, 140)),
    "sliced": ("SLICED", (200, 110, 0)),
    "on": ("ON", (225, 190, 0)),
}
#: Badge order on a tile (the state tuple's order does not matter).
BADGE_ORDER = tuple(BADGES)

SHAPES: dict[str, tuple[str, ...]] = {
    "round": ("apple", "tomato", "potato", "egg", "lettuce", "basketball", "alarmclock", "watch"),
    "vessel": ("mug", "cup", "bowl", "pot", "pan", "kettle", "box"),
    "dish": ("plate", "cd"),
    "bottle": (
        "winebottle", "glassbottle", "soapbottle", "spraybottle", "vase", "candle",
        "peppershaker", "saltshaker", "wateringcan", "toiletpaper", "papertowel",
    ),
    "long": (
        "knife", "butterknife", "fork", "spoon", "spatula", "ladle", "pen", "pencil",
        "baseballbat", "tennisracket", "plunger",
    ),
    "soft": ("cloth", "handtowel", "towel", "dishsponge", "soapbar", "pillow", "bread"),
    "lamp": ("desklamp", "floorlamp"),
}  # fmt: skip
SHAPE_OF = {kind: shape for shape, kinds in SHAPES.items() for kind in kinds}
COLORS: dict[str, render.RGB] = {
    "apple": (200, 30, 40), "tomato": (230, 60, 40), "potato": (160, 120, 70), "egg": (235, 225, 200),
    "lettuce": (80, 170, 60), "bread": (210, 160, 90), "mug": (60, 90, 170), "cup": (90, 170, 210),
    "bowl": (200, 120, 60), "plate": (190, 196, 214), "pot": (90, 90, 100), "pan": (60, 60, 64),
    "desklamp": (230, 200, 60), "floorlamp": (230, 200, 60),
}  # fmt: skip
PALETTE: tuple[render.RGB, ...] = (
    (160, 60, 160), (40, 140, 120), (200, 100, 30), (70, 110, 200), (150, 150, 40),
    (190, 70, 90), (90, 150, 60), (120, 90, 180), (60, 130, 170), (170, 110, 80),
)  # fmt: skip


@dataclass(frozen=True)
class Tile:
    """One object as the frame shows it."""

    name: str  # "apple 2"
    states: tuple[str, ...] = ()  # among BADGES


@dataclass(frozen=True)
class FrameState:
    """Everything a frame shows; hashable (frames are cached by it)."""

    room: str
    facing: str  # receptacle name, "" in the middle of the room
    openable: bool
    is_open: bool
    contents: tuple[Tile, ...]
    held: Tile | None
    visited: tuple[str, ...]
    opened: tuple[str, ...]


def color_of(kind: str) -> render.RGB:
    """A fixed colour per object type (the same on every machine)."""
    return COLORS.get(kind) or PALETTE[zlib.crc32(kind.encode()) % len(PALETTE)]


@render.frame_cache(maxsize=2048)
def draw_frame(state: FrameState) -> np.ndarray:
    """The frame of ``state`` as a read-only (300, 300, 3) array."""
    image = render.canvas((SIZE, SIZE), BOX_FILL)
    draw = ImageDraw.Draw(image)
    _header(draw, state)
    _panel(draw, state)
    _holding(draw, state.held)
    image.paste(_map(state), MAP[:2])
    return render.frozen_array(image)


def _header(draw: ImageDraw.ImageDraw, state: FrameState) -> None:
    draw.rectangle(HEADER, fill=HEADER_FILL)
    title = state.facing or "middle of the room"
    badge = ("OPEN" if state.is_open else "CLOSED") if state.openable else ""
    room_for_title = SIZE - 16 - (84 if badge else 0)
    size = min(22, render.fitting_size(title, room_for_title, 24))
    render.text(draw, (8, 17), title, size, render.WHITE, anchor="lm")
    if badge:
        fill = OPENED if state.is_open else (150, 60, 50)
        draw.rounded_rectangle((SIZE - 88, 6, SIZE - 8, 27), radius=6, fill=fill)
        render.text(draw, (SIZE - 48, 17), badge, 15, render.WHITE)


def _panel(draw: ImageDraw.ImageDraw, state: FrameState) -> None:
    left, top, right, bottom = PANEL
    draw.rectangle(PANEL, fill=PANEL_FILL, outline=(200, 192, 176))
    middle = ((left + right) // 2, (top + bottom) // 2)
    if not state.facing:
        render.text(draw, middle, "go to a receptacle", 16, MUTED, bold=False)
        return
    if state.openable and not state.is_open:
        _doors(draw, PANEL)
        return
    if not state.contents:
        render.text(draw, middle, "empty", 20, MUTED)
        return
    columns, rows = _grid(len(state.contents))
    width, height = (right - left - 4) // columns, (bottom - top - 4) // rows
    for index, tile in enumerate(state.contents):
        row, column = divmod(index, columns)
        x, y = left + 2 + column * width, top + 2 + row * height
        _tile(draw, (x + 2, y + 2, x + width - 2, y + height - 2), tile)


def _grid(count: int) -> tuple[int, int]:
    """(columns, rows) of the contents grid: the fewest tiles, the largest first."""
    for columns, rows in ((1, 1), (2, 1), (3, 1), (2, 2), (3, 2), (4, 2), (4, 3), (5, 3), (5, 4), (6, 4)):
        if count <= columns * rows:
            return columns, rows
    columns = 7
    return columns, -(-count // columns)


def _doors(draw: ImageDraw.ImageDraw, box: render.Box) -> None:
    left, top, right, bottom = box
    middle = (left + right) // 2
    for door in (
        (left + 20, top + 12, middle - 3, bottom - 12),
        (middle + 3, top + 12, right - 20, bottom - 12),
    ):
        draw.rectangle(door, fill=DOOR, outline=INK, width=2)
    for x in (middle - 12, middle + 12):
        draw.rectangle((x - 2, (top + bottom) // 2 - 14, x + 2, (top + bottom) // 2 + 14), fill=INK)
    render.text(draw, ((left + right) // 2, bottom - 24), "closed", 16, render.WHITE)


def _tile(draw: ImageDraw.ImageDraw, box: render.Box, tile: Tile) -> None:
    left, top, right, bottom = box
    draw.rounded_rectangle(box, radius=6, fill=render.WHITE, outline=(190, 184, 170))
    width, height = right - left, bottom - top
    label_height = max(10, min(16, height // 5))
    badges = [state for state in BADGE_ORDER if state in tile.states]
    badge_height = max(9, min(14, height // 6)) if badges else 0
    icon = (left + 4, top + 3 + badge_height, right - 4, bottom - label_height - 4)
    kind = tile.name.rpartition(" ")[0] or tile.name
    _icon(draw, icon, kind, tile.states)
    size = render.fitting_size(tile.name, width - 6, label_height + 2, largest=16)
    render.text(draw, ((left + right) // 2, bottom - label_height // 2 - 2), tile.name, size, INK)
    if badges:
        _badges(draw, (left + 3, top + 3, right - 3, top + 3 + badge_height), badges)


def _badges(draw: ImageDraw.ImageDraw, box: render.Box, states: list[str]) -> None:
    left, top, right, bottom = box
    width = (right - left) // len(states)
    for index, state in enumerate(states):
        word, fill = BADGES[state]
        x0 = left + index * width
        draw.rounded_rectangle((x0 + 1, top, x0 + width - 1, bottom), radius=3, fill=fill)
        size = render.fitting_size(word, width - 4, bottom - top, largest=13)
        render.text(draw, (x0 + width // 2, (top + bottom) // 2), word, size, render.WHITE)


def _icon(draw: ImageDraw.ImageDraw, box: render.Box, kind: str, states: tuple[str, ...]) -> None:
    left, top, right, bottom = box
    side = max(6, min(right - left, bottom - top, 84))
    cx, cy = (left + right) // 2, (top + bottom) // 2
    r = side // 2
    fill = color_of(kind)
    outline = BADGES["hot"][1] if "hot" in states else BADGES["cold"][1] if "cold" in states else INK
    width = 3 if outline != INK else 1
    shape = SHAPE_OF.get(kind, "block")
    if shape == "round":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=outline, width=width)
    elif shape == "vessel":
        draw.rounded_rectangle((cx - r, cy - r // 2, cx + r, cy + r), radius=max(2, r // 3), fill=fill,
                               outline=outline, width=width)  # fmt: skip
        draw.ellipse((cx - r, cy - r // 2 - r // 4, cx + r, cy - r // 2 + r // 4), fill=(250, 250, 250),
                     outline=outline, width=1)  # fmt: skip
    elif shape == "dish":
        draw.ellipse((cx - r, cy - r // 3, cx + r, cy + r // 3), fill=fill, outline=outline, width=width)
        draw.ellipse((cx - r // 2, cy - r // 6, cx + r // 2, cy + r // 6), outline=INK, width=1)
    elif shape == "bottle":
        draw.rounded_rectangle((cx - r // 2, cy - r // 4, cx + r // 2, cy + r), radius=3, fill=fill,
                               outline=outline, width=width)  # fmt: skip
        draw.rectangle((cx - r // 5, cy - r, cx + r // 5, cy - r // 4), fill=fill, outline=outline, width=1)
    elif shape == "long":
        draw.polygon([(cx - r, cy + r // 2), (cx + r, cy - r // 2), (cx + r, cy - r // 4), (cx - r, cy + r * 3 // 4)],
                     fill=fill, outline=outline)  # fmt: skip
    elif shape == "soft":
        draw.rounded_rectangle((cx - r, cy - r * 2 // 3, cx + r, cy + r * 2 // 3), radius=max(3, r // 2),
                               fill=fill, outline=outline, width=width)  # fmt: skip
    elif shape == "lamp":
        lit = "on" in states
        if lit:
            draw.ellipse((cx - r, cy - r, cx + r, cy + r // 3), fill=(255, 236, 120))
        draw.polygon([(cx - r // 2, cy - r // 6), (cx + r // 2, cy - r // 6), (cx + r // 4, cy - r * 3 // 4),
                      (cx - r // 4, cy - r * 3 // 4)], fill=fill, outline=INK)  # fmt: skip
        draw.rectangle((cx - 1, cy - r // 6, cx + 1, cy + r * 3 // 4), fill=INK)
        draw.rectangle((cx - r // 3, cy + r * 3 // 4 - 2, cx + r // 3, cy + r * 3 // 4 + 1), fill=INK)
    else:
        draw.rounded_rectangle((cx - r, cy - r * 3 // 4, cx + r, cy + r * 3 // 4), radius=3, fill=fill,
                               outline=outline, width=width)  # fmt: skip
    if "sliced" in states:
        for offset in (-r // 3, r // 3):
            draw.line(
                (cx + offset - r // 2, cy + r, cx + offset + r // 2, cy - r), fill=render.WHITE, width=3
            )
    if "clean" in states:
        for dx, dy in ((r, -r), (-r, -r // 2)):
            _sparkle(draw, (cx + dx * 3 // 4, cy + dy * 3 // 4), max(3, r // 4))


def _sparkle(draw: ImageDraw.ImageDraw, center: tuple[int, int], r: int) -> None:
    x, y = center
    color = BADGES["clean"][1]
    draw.line((x - r, y, x + r, y), fill=color, width=2)
    draw.line((x, y - r, x, y + r), fill=color, width=2)


def _holding(draw: ImageDraw.ImageDraw, held: Tile | None) -> None:
    left, top, right, bottom = HOLDING
    draw.rectangle(HOLDING, fill=PANEL_FILL, outline=(200, 192, 176))
    render.text(draw, ((left + right) // 2, top + 9), "holding", 13, MUTED)
    inner = (left + 4, top + 19, right - 4, bottom - 4)
    if held is None:
        render.text(draw, ((left + right) // 2, (inner[1] + inner[3]) // 2), "nothing", 16, MUTED)
    else:
        _tile(draw, inner, held)


# ---------------------------------------------------------------------- the map


@dataclass(frozen=True)
class MapGeometry:
    """Where the room's floor and receptacles fall in the map box."""

    scale: float
    origin: tuple[float, float]  # room (x, z) at the map's (0, bottom)
    height: int

    def point(self, x: float, z: float) -> tuple[int, int]:
        return (
            round((x - self.origin[0]) * self.scale) + 6,
            self.height - 6 - round((z - self.origin[1]) * self.scale),
        )


@lru_cache(maxsize=128)
def _map_base(room_name: str) -> tuple[Image.Image, MapGeometry]:
    """The room's floor on the map (cached per room), and the projection."""
    room = load_room(room_name)
    width, height = MAP[2] - MAP[0], MAP[3] - MAP[1]
    min_x, min_z, max_x, max_z = room.bounds()
    scale = min((width - 12) / max(max_x - min_x, 0.5), (height - 12) / max(max_z - min_z, 0.5))
    geometry = MapGeometry(scale, (min_x, min_z), height)
    image = Image.new("RGB", (width, height), MAP_FILL)
    draw = ImageDraw.Draw(image)
    cell = max(1, round(0.25 * scale / 2))
    for x, z in room.floor.tolist():
        px, py = geometry.point(x, z)
        draw.rectangle((px - cell, py - cell, px + cell, py + cell), fill=FLOOR)
    draw.rectangle((0, 0, width - 1, height - 1), outline=(200, 192, 176))
    return image, geometry


def _map(state: FrameState) -> Image.Image:
    base, geometry = _map_base(state.room)
    image = base.copy()
    draw = ImageDraw.Draw(image)
    room = load_room(state.room)
    visited, opened = set(state.visited), set(state.opened)
    for receptacle in room.receptacles:
        px, py = geometry.point(receptacle.x, receptacle.z)
        fill = OPENED if receptacle.name in opened else VISITED if receptacle.name in visited else UNVISITED
        draw.rectangle((px - 3, py - 3, px + 3, py + 3), fill=fill, outline=INK)
        if receptacle.name == state.facing:
            draw.ellipse((px - 7, py - 7, px + 7, py + 7), outline=FACED, width=2)
    _agent(draw, room, state.facing, geometry)
    return image


def _agent(draw: ImageDraw.ImageDraw, room: Room, facing: str, geometry: MapGeometry) -> None:
    receptacle = next((r for r in room.receptacles if r.name == facing), None)
    if receptacle is None:
        px, py = geometry.point(*start_point(room))
        draw.ellipse((px - 5, py - 5, px + 5, py + 5), fill=AGENT, outline=INK)
        return
    px, py = geometry.point(receptacle.stand_x, receptacle.stand_z)
    dx, dz = HEADINGS.get(receptacle.heading, (0.0, 1.0))
    tip = (px + round(dx * 8), py - round(dz * 8))
    back_left = (px - round(dz * 5) - round(dx * 4), py - round(dx * 5) + round(dz * 4))
    back_right = (px + round(dz * 5) - round(dx * 4), py + round(dx * 5) + round(dz * 4))
    draw.polygon([tip, back_left, back_right], fill=AGENT, outline=INK)
