"""Imports every built-in game so that each registers itself under its lower-case name."""

from __future__ import annotations

from env_server.core import Env
from env_server.games import register
from env_server.games.blackjack import Blackjack
from env_server.games.ezpoints import EZPoints
from env_server.games.numberline import NumberLine
from env_server.games.points24 import Points24

#: The built-in game classes by name; their constructors take only keyword options with defaults.
BUILTIN: dict[str, type[Env]] = {cls.name: cls for cls in (NumberLine, EZPoints, Points24, Blackjack)}

for _name, _cls in BUILTIN.items():
    register(_name, _cls)
