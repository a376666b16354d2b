"""One venv per peer (``.bench-venvs/<peer>``): made once per pin set, reused while it matches."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TextIO

REPO = Path(__file__).resolve().parents[2]

#: Each peer's venv: what it installs besides this checkout's environment side.
PEER_REQUIREMENTS = {
    "dm_env_rpc": ["dm-env-rpc==1.1.7"],
    "openenv": ["openenv-core==0.3.0"],
}
VERSIONS_OF = (
    "dm-env-rpc",
    "openenv-core",
    "grpcio",
    "protobuf",
    "websockets",
    "uvicorn",
    "fastapi",
    "numpy",
)


def venv_python(venvs: Path, peer: str) -> Path:
    return venvs / peer / "bin" / "python"


def ensure_venv(venvs: Path, peer: str, log: TextIO) -> dict[str, str]:
    """Create (or reuse) the peer's venv; returns the versions of the packages that matter."""
    target = venvs / peer
    python = venv_python(venvs, peer)
    wanted = json.dumps({"requirements": PEER_REQUIREMENTS[peer], "repo": str(REPO)})
    # Written last, after pip succeeded (`venv --clear` deletes it first): a venv whose install did
    # not finish, or was for other pins, has no matching marker and is made again. No manifest of
    # its files: Python adds __pycache__ to a venv as it is used.
    marker = target / "bench-ready.json"
    if not (marker.exists() and marker.read_text() == wanted and python.exists()):
        print(f"  creating {target} (pip install {' '.join(PEER_REQUIREMENTS[peer])} -e .)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(target)], check=True)
        install = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        result = subprocess.run(
            [*install, *PEER_REQUIREMENTS[peer], "-e", str(REPO)], stdout=log, stderr=subprocess.STDOUT
        )
        if result.returncode != 0:
            raise SystemExit(f"pip install into {target} failed; see {log.name}")
        marker.write_text(wanted)
    frozen = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
    )
    versions = {p["name"].lower(): p["version"] for p in json.loads(frozen.stdout)}
    return {name: versions[name] for name in VERSIONS_OF if name in versions}
