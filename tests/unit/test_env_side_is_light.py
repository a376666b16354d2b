"""The environment side must import and serve without torch or transformers (containers stay slim)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers", "peft", "accelerate")

PROBE = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HEAVY!r}:
            raise ImportError("blocked for this test: " + name)
        return None
sys.meta_path.insert(0, Block())
import visact.env_server, visact.env_server.server, visact.env_server.service, visact.env_server.client, visact.env_server.games
import visact.env_server.conformance.cli
from visact.env_server import games
for name in games.names():
    env = games.make(name)
    env.reset(seed=0)
    env.render()
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
print("heavy:", loaded)
assert not loaded, loaded
"""


def test_env_server_imports_without_torch_or_transformers() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "heavy: []" in result.stdout
