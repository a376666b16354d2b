"""deploy/compose.yaml, for real: build its images with podman-compose on the local Debian base,
bring the one-machine cluster up (three env servers, the trainer, two agents), let it train a
few PPO updates, and bring it down again, each container answering SIGTERM with exit 0.

What it shows: the agents and the trainer, each building the tiny VLM in its own container,
agree on the base weights (the trainer registers only agents with its fingerprint); both agents
play all three games; the adapter changes; `down` leaves a checkpoint of the last update.
Needs rootful podman, the base image of ``deploy/podman-setup.sh`` and podman-compose (dev
extra); skipped without them, except under CI, where that fails. Builds reuse podman's layer
cache (the env-server image is the one test_env_server_image.py builds), so a warm run spends
its time training, not building.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.container.podman_util import (
    BASE,
    ROOT,
    build_args_for_pip,
    image_mb,
    podman,
    podman_environment,
    skip_or_fail,
    timed_build,
)

pytestmark = [pytest.mark.container, pytest.mark.slow]

COMPOSE_FILE = ROOT / "deploy" / "compose.yaml"
TAG = "test"  # images localhost/visact-{env-server,agent,trainer}:test
SERVICES = {"env-numberline", "env-ezpoints", "env-blackjack", "trainer", "agent-1", "agent-2"}
GAMES = {"numberline", "ezpoints", "blackjack"}
TOKEN = "visact-compose-test-token"
WHEELS = Path(os.environ.get("VISACT_WHEELS", "/opt/wheels"))  # a local CPU torch wheel, if any
UPDATES = 2
# The e2e test's fast settings (tests/e2e/test_training_loop.py) and a small cluster.
RUN_SETTINGS = {
    "VISACT_STEPS_PER_UPDATE": "12",
    "VISACT_MINIBATCH_SIZE": "6",
    "VISACT_MICRO_BATCH_SIZE": "6",
    "VISACT_PPO_EPOCHS": "1",
    "VISACT_LR": "1e-3",
    "VISACT_MAX_NEW_TOKENS": "24",
    "VISACT_LORA_R": "4",
    "VISACT_LORA_ALPHA": "8",
    "VISACT_SESSIONS": "3",
    "VISACT_TRAINER_THREADS": "1",
    "VISACT_AGENT_THREADS": "1",
    "VISACT_KEEP_VERSIONS": "1000",  # keep weights/v000000 to compare with
    "VISACT_CHECKPOINT_EVERY": "100",  # the checkpoint the test finds is the one SIGTERM wrote
    "VISACT_MAX_UPDATES": "0",  # train until `down`
    "VISACT_GRACE": "10",
    "VISACT_LOG_FORMAT": "text",
}


def podman_compose_command() -> list[str]:
    script = Path(sys.executable).with_name("podman-compose")
    if script.exists():
        return [str(script)]
    if found := shutil.which("podman-compose"):
        return [found]
    if importlib.util.find_spec("podman_compose") is not None:
        return [sys.executable, "-m", "podman_compose"]
    skip_or_fail("podman-compose is not installed (pip install -e '.[dev]')")
    raise AssertionError("unreachable")


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def local_torch_wheel() -> Path | None:
    wheels = sorted(WHEELS.glob("torch-*.whl")) if WHEELS.is_dir() else []
    return wheels[-1] if wheels else None


class Cluster:
    """``podman-compose -f deploy/compose.yaml -p PROJECT ...`` with the test's environment."""

    def __init__(self, podman_env: dict[str, str], run_dir: Path) -> None:
        self.project = f"visact-test-{uuid.uuid4().hex[:8]}"
        self.run_dir = run_dir
        ports = free_ports(4)
        self.env = {
            **podman_env,
            **RUN_SETTINGS,
            "VISACT_TAG": TAG,
            "VISACT_BASE": BASE,
            "VISACT_TORCH_BASE": BASE,
            "VISACT_RUN_DIR": str(run_dir),
            "VISACT_TOKEN": TOKEN,
            "VISACT_NUMBERLINE_PORT": str(ports[0]),
            "VISACT_EZPOINTS_PORT": str(ports[1]),
            "VISACT_BLACKJACK_PORT": str(ports[2]),
            "VISACT_TRAINER_PORT": str(ports[3]),
        }
        for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "TORCH_INDEX_URL"):
            self.env.pop(name, None)  # the builds get exactly what build() gives them
        self.base_command = [*podman_compose_command(), "-f", str(COMPOSE_FILE), "-p", self.project]

    def run(
        self, *args: str, timeout: float = 300, env: dict[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self.base_command, *args],
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"podman-compose {' '.join(args)} -> {result.returncode}\n"
                f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            )
        return result

    def build(self, service: str, image: str, torch: bool = False) -> float:
        """``podman-compose build SERVICE`` (one at a time: the trainer reuses the agent's layers)."""
        podman_build_args = build_args_for_pip()
        env = dict(self.env)
        wheel = local_torch_wheel() if torch else None
        if wheel is not None:  # take the CPU torch wheel that lies on this disk
            podman_build_args += ["-v", f"{WHEELS}:{WHEELS}:ro"]
            env["PIP_FIND_LINKS"] = str(WHEELS)
            env["VISACT_TORCH_SPEC"] = "torch==" + wheel.name.split("-")[1].split("+")[0]
        return timed_build(
            self.env,
            image,
            lambda: self.run(
                "--podman-build-args", " ".join(podman_build_args), "build", service, timeout=1200, env=env
            ),
        )

    def containers(self) -> dict[str, dict[str, Any]]:
        """service -> {name, state, exit_code} of this project's containers."""
        out = podman(
            self.env,
            *("ps", "-a", "--format", "json", "--filter", f"label=io.podman.compose.project={self.project}"),
        )
        found = {}
        for c in json.loads(out or "[]"):
            found[c["Labels"]["io.podman.compose.service"]] = {
                "name": c["Names"][0],
                "state": c["State"],
                "exit_code": c.get("ExitCode"),
            }
        return found

    def logs(self, tail: int = 40) -> str:
        parts = []
        for service, c in sorted(self.containers().items()):
            result = subprocess.run(
                ["podman", "logs", "--tail", str(tail), c["name"]],
                env=self.env,
                capture_output=True,
                text=True,
                check=False,
            )
            parts.append(f"----- {service} ({c['state']}) -----\n{result.stdout}{result.stderr}")
        return "\n".join(parts)


def metrics(run: Path) -> list[dict[str, float]]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def status(run: Path) -> dict[str, Any]:
    try:
        return json.loads((run / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def adapter_tensors(run: Path, version: int) -> dict[str, Any]:
    from safetensors.torch import load as load_safetensors

    return load_safetensors((run / "weights" / f"v{version:06d}" / "adapter.safetensors").read_bytes())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    podman_env = podman_environment(tmp_path_factory.mktemp("podman"))
    if importlib.util.find_spec("safetensors") is None:
        pytest.skip("safetensors (the agent extra) reads the adapters")
    run_dir = tmp_path_factory.mktemp("compose") / "run"
    run_dir.mkdir()
    if os.geteuid() == 0:
        os.chown(run_dir, 10001, 10001)  # the containers run as uid 10001
    else:
        run_dir.chmod(0o777)
    cluster = Cluster(podman_env, run_dir)
    try:
        yield cluster
    finally:  # whatever happened: no container of this project is left behind
        left = cluster.containers()
        if left:
            cluster.run("down", "-t", "0", check=False, timeout=120)
            for c in cluster.containers().values():
                podman(cluster.env, "rm", "-f", "-t", "0", c["name"], check=False)


@pytest.mark.timeout(1800)  # cold: the agent image alone takes ~2 min to build
def test_compose_cluster_trains_and_comes_down_cleanly(cluster: Cluster) -> None:
    env = cluster.env
    timings: dict[str, float] = {}
    images = {
        "env-server": f"localhost/visact-env-server:{TAG}",
        "agent": f"localhost/visact-agent:{TAG}",
        "trainer": f"localhost/visact-trainer:{TAG}",
    }
    timings["build env-server"] = cluster.build("env-numberline", images["env-server"])
    timings["build agent"] = cluster.build("agent-1", images["agent"], torch=True)
    timings["build trainer"] = cluster.build("trainer", images["trainer"], torch=True)
    sizes = {name: image_mb(env, tag) for name, tag in images.items()}

    # up: the images exist, so nothing is built again
    start = time.monotonic()
    up = cluster.run("up", "-d", timeout=300)
    timings["up -d"] = time.monotonic() - start
    assert "STEP 1/" not in up.stdout, "up rebuilt an image"
    containers = cluster.containers()
    assert set(containers) == SERVICES, containers

    # train: a few PPO updates, both agents registered (same base weights) on all three games
    run = cluster.run_dir
    deadline = time.monotonic() + 900
    while True:
        rows, state = metrics(run), status(run)
        agents = state.get("agents", {})
        if len(rows) >= UPDATES and len(agents) == 2:
            break
        stopped = {s: c for s, c in cluster.containers().items() if c["state"] != "running"}
        assert not stopped, f"containers stopped early: {stopped}\n{cluster.logs()}"
        assert time.monotonic() < deadline, (
            f"{len(rows)} updates, agents {agents} after 900 s\n{cluster.logs()}"
        )
        time.sleep(2)
    timings[f"up -> {UPDATES} updates"] = time.monotonic() - start
    assert {a["name"] for a in agents.values()} == {"agent-1", "agent-2"}, agents
    for agent in agents.values():
        assert set(agent["environments"]) == GAMES, agent
    latest = int(rows[-1]["charts/version"])
    first, changed = adapter_tensors(run, 0), adapter_tensors(run, latest)
    assert set(first) == set(changed)
    assert any(not (changed[k] == first[k]).all() for k in first), "the adapter never changed"

    # each container built the tiny VLM itself, into the same cache entry with the same bytes
    entries = {}
    for service in ("trainer", "agent-1", "agent-2"):
        entries[service] = podman(
            env,
            *("exec", containers[service]["name"], "sh", "-c"),
            "cd /home/visact/.cache/visact && sha256sum */*.safetensors */*.json | sort",
        )
    assert entries["trainer"].strip(), entries
    assert entries["agent-1"] == entries["trainer"] == entries["agent-2"], entries

    # down: every process gets SIGTERM and exits 0 by itself (143 or 137 would mean killed)
    logs_before_down = cluster.logs(tail=15)
    since = str(int(time.time()) - 1)
    start = time.monotonic()
    down = cluster.run("down", timeout=600)
    timings["down"] = time.monotonic() - start
    died = podman(
        env,
        *("events", "--stream=false", "--since", since, "--filter", "event=died"),
        *("--format", "{{.Name}} {{.ContainerExitCode}}"),
    )
    exits: dict[str, int] = {}
    for line in died.splitlines():
        name, _, code = line.rpartition(" ")
        if name.startswith(cluster.project + "_"):  # PROJECT_SERVICE_1
            exits[name[len(cluster.project) + 1 :].rsplit("_", 1)[0]] = int(code)
    assert exits == dict.fromkeys(SERVICES, 0), (
        f"exit codes {exits}\n{down.stdout[-2000:]}{down.stderr[-2000:]}\n{logs_before_down}"
    )
    assert timings["down"] < 30, "a container waited out its stop_grace_period"
    assert cluster.containers() == {}, "down left containers behind"

    # the trainer checkpointed on SIGTERM: the newest checkpoint is its last update
    updates = int(metrics(run)[-1]["update"])
    latest_checkpoint = (run / "checkpoints" / "LATEST").read_text().strip()
    saved = json.loads((run / "checkpoints" / latest_checkpoint / "state.json").read_text())
    assert saved["updates"] == updates >= UPDATES, (latest_checkpoint, saved["updates"], updates)

    print(
        "\ncompose cluster: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
        + f"; {updates} updates by down"
        + "; images "
        + ", ".join(f"{k} {v:.0f} MB" for k, v in sizes.items())
    )
