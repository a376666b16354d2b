"""Imports every built-in game so that each registers itself under its lower-case name.

ALFWorld registers only when its extra (alfworld, textworld, fast-downward) is installed; its
module is imported when a game is made, not here (textworld takes a second to import).
"""

from __future__ import annotations

from visact.env_server.core import Env
from visact.env_server.games import register, register_missing
from visact.env_server.games.alfworld import wheel as alfworld_wheel
from visact.env_server.games.blackjack import Blackjack
from visact.env_server.games.ezpoints import EZPoints
from visact.env_server.games.numberline import NumberLine
from visact.env_server.games.points24 import Points24

#: The built-in game classes by name; their constructors take only keyword options with defaults.
BUILTIN: dict[str, type[Env]] = {cls.name: cls for cls in (NumberLine, EZPoints, Points24, Blackjack)}

for _name, _cls in BUILTIN.items():
    register(_name, _cls)


def _alfworld() -> Env:
    from visact.env_server.games.alfworld.env import AlfWorld

    return AlfWorld()


if alfworld_wheel.installed():
    register("alfworld", _alfworld)
else:
    register_missing("alfworld", alfworld_wheel.INSTALL_HINT)
