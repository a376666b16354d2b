"""What the container tests share: podman with the containers.conf deploy/podman-setup.sh writes, the local
base image, the skip-or-fail policy, and image builds that keep podman's layer cache warm.

Without podman (or the base image, or podman-compose) the container tests skip, except under CI
(``CI=true``), where that is a failure: CI must run ``deploy/podman-setup.sh`` first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASE = os.environ.get("VISACT_BASE_IMAGE", "localhost/debian-base:bookworm")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
SETUP_HINT = "run `bash deploy/podman-setup.sh` as root first (see docs/deploy.md)"


def skip_or_fail(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason}; CI must build and run the images: {SETUP_HINT}")
    pytest.skip(f"{reason}; {SETUP_HINT}")


def podman_environment(scratch: Path) -> dict[str, str]:
    """The environment for podman commands (CONTAINERS_CONF set); skips or fails without podman."""
    if shutil.which("podman") is None:
        skip_or_fail("podman is not installed")
    env = dict(os.environ)
    if "CONTAINERS_CONF" not in env:
        conf = Path("/etc/containers/visact.conf")  # written by deploy/podman-setup.sh
        if not conf.exists():
            conf = scratch / "containers.conf"
            conf.write_text('[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n')
        env["CONTAINERS_CONF"] = str(conf)
    if subprocess.run(["podman", "image", "exists", BASE], env=env, check=False).returncode != 0:
        skip_or_fail(f"the base image {BASE} is missing")
    return env


def podman(env: dict[str, str], *args: str, timeout: float = 120, check: bool = True) -> str:
    result = subprocess.run(
        ["podman", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result.stdout


def image_id(env: dict[str, str], tag: str) -> str:
    return podman(env, "image", "inspect", "--format", "{{.Id}}", tag, check=False).strip()


def image_mb(env: dict[str, str], tag: str) -> float:
    return int(podman(env, "image", "inspect", "--format", "{{.Size}}", tag)) / 1e6


def timed_build(env: dict[str, str], tag: str, run_build: Callable[[], object]) -> float:
    """Run ``run_build()`` (which builds ``tag``), drop the image it replaced (its layers stay in the
    cache while another image uses them); returns the seconds the build took."""
    previous = image_id(env, tag)
    start = time.monotonic()
    run_build()
    seconds = time.monotonic() - start
    if previous and previous != image_id(env, tag):
        podman(env, "rmi", previous, check=False)  # still used by a container: kept
    return seconds


def build_args_for_pip() -> list[str]:
    """``podman build`` options for pip inside a build on these machines: the host network and,
    behind a TLS-intercepting proxy, the host's CA bundle as the ``pip_ca`` build secret."""
    args = ["--network", "host", "--format", "docker"]
    if CA_BUNDLE.exists():
        args += ["--secret", f"id=pip_ca,src={CA_BUNDLE}"]
    return args
