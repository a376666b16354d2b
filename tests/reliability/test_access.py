"""Access control on every server: bearer tokens, TLS and mutual TLS with certificates made here,
episodes only from registered agents, and no code path that unpickles what comes over the network.

The env server and the trainer are the real server wiring (``start_server``, ``visact.trainer.serve``'s
``start_server``) in process on port 0; the Node example runs as a process when it is built.
"""

from __future__ import annotations

import ast
import hashlib
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
import torch

from tests.envs import CounterEnv
from tests.fuzz.trainer_messages import LATEST, TEMPERATURE, valid_episode
from tests.processes import start_process
from tests.reliability.certs import Certificates, make_certificates
from visact import rpc
from visact.agent.config import AgentConfig, AgentRunConfig, ServersConfig
from visact.agent.trainer_link import TrainerLink
from visact.env.v1 import env_pb2
from visact.env_server.client import EnvCallError, EnvClient
from visact.env_server.server import ServerConfig, start_server
from visact.model.loading import weights_fingerprint
from visact.orchestration.processes import wait_ready
from visact.trainer.admission import Admission
from visact.trainer.config import NetworkConfig, TrainerConfig
from visact.trainer.hub import Hub, PublishedVersion
from visact.trainer.serve import start_server as start_trainer_server
from visact.trainer.service import ModelIdentity, TrainerServicer
from visact.trainer.v1 import trainer_pb2 as pb
from visact.trainer.v1 import trainer_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "a-long-random-token"
HEALTH = "/grpc.health.v1.Health/Check"
REFLECTION = ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", True, True)


def methods(descriptor: Any, service: str) -> list[tuple[str, bool, bool]]:
    """(path, client streaming, server streaming) of every method of ``service``."""
    found = descriptor.services_by_name[service]
    return [(f"/{found.full_name}/{m.name}", m.client_streaming, m.server_streaming) for m in found.methods]


ENV_METHODS = [*methods(env_pb2.DESCRIPTOR, "Environment"), REFLECTION]
TRAINER_METHODS = [*methods(pb.DESCRIPTOR, "Trainer"), REFLECTION]


def call(
    channel: grpc.Channel, method: tuple[str, bool, bool], data: bytes = b"", metadata: Any = ()
) -> grpc.StatusCode:
    """The status of one raw call (a server stream's first message is enough)."""
    path, client_streaming, server_streaming = method
    kind = ("stream" if client_streaming else "unary") + "_" + ("stream" if server_streaming else "unary")
    request: Any = iter([data]) if client_streaming else data
    try:
        result = getattr(channel, kind)(path)(request, timeout=10, metadata=metadata)
        if server_streaming:
            next(iter(result), None)
            result.cancel()
    except grpc.RpcError as exc:
        return grpc.StatusCode.OK if exc.code() == grpc.StatusCode.CANCELLED else exc.code()
    return grpc.StatusCode.OK


def assert_token_enforced(
    address: str, all_methods: list[tuple[str, bool, bool]], garbage: bytes = b"\xff\xfe garbage"
) -> None:
    """Without the token or with a wrong one: UNAUTHENTICATED, every method, whatever the request
    bytes (also ones that do not parse). With it: anything but UNAUTHENTICATED. Health needs none."""
    channel = grpc.insecure_channel(address)
    wrong = (("authorization", "Bearer not-the-token"),)
    malformed = (("authorization", TOKEN),)  # the token without "Bearer "
    right = (("authorization", f"Bearer {TOKEN}"),)
    try:
        for method in all_methods:
            for metadata in ((), wrong, malformed):
                for data in (b"", garbage) if garbage else (b"",):
                    code = call(channel, method, data, metadata)
                    assert code == grpc.StatusCode.UNAUTHENTICATED, (method[0], metadata, data, code)
            assert call(channel, method, b"", right) != grpc.StatusCode.UNAUTHENTICATED, method[0]
        assert call(channel, (HEALTH, False, False)) == grpc.StatusCode.OK
    finally:
        channel.close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


# ---------------------------------------------------------------------------------------------
# a trainer without a model: the real servicer and server wiring
# ---------------------------------------------------------------------------------------------

FAKE_MODEL = torch.nn.Linear(3, 2)
FINGERPRINT = weights_fingerprint(FAKE_MODEL)


@pytest.fixture
def trainer_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[tuple[rpc.Server, Hub]] = []

    def make(**config: Any) -> tuple[str, Hub]:
        hub = Hub(
            buffer_steps=64,
            max_policy_lag=1,
            agent_timeout=config.pop("agent_timeout", 60.0),
            keep_versions=2,
        )
        data = b"weights" * 10
        path = tmp_path / f"w{len(started)}" / "adapter.safetensors"
        path.parent.mkdir()
        path.write_bytes(data)
        hub.publish(PublishedVersion(LATEST, path, hashlib.sha256(data).hexdigest(), len(data), time.time()))
        servicer = TrainerServicer(
            hub,
            ModelIdentity(
                "fake", FINGERPRINT, Admission(vocab_size=1000, max_tokens=256, temperature=TEMPERATURE)
            ),
            pb.SamplingConfig(temperature=TEMPERATURE, max_new_tokens=4),
            "access-run",
        )
        server = start_trainer_server(
            TrainerConfig(NetworkConfig(host="127.0.0.1", port=0, **config)), servicer
        )
        started.append((server, hub))
        return f"127.0.0.1:{server.port}", hub

    yield make
    for server, hub in started:
        hub.close()
        server.stop(grace=None)


def fake_policy() -> Any:
    """What TrainerLink needs of a policy to register: an engine with a fingerprint that takes the
    trainer's version bound and LoRA layout, and sampling knobs."""
    engine = SimpleNamespace(
        fingerprint=FINGERPRINT, name="fake", keep_versions=lambda count: None, check_lora=lambda *_: None
    )
    return SimpleNamespace(engine=engine, version=0, temperature=1.0, max_new_tokens=1, cot=True)


# ---------------------------------------------------------------------------------------------
# tokens
# ---------------------------------------------------------------------------------------------


def test_env_server_with_a_token_refuses_every_call_without_it() -> None:
    running = start_server(ServerConfig(port=0, host="127.0.0.1", token=TOKEN), env_factory=CounterEnv)
    try:
        assert_token_enforced(f"127.0.0.1:{running.port}", ENV_METHODS)
        with EnvClient(f"127.0.0.1:{running.port}", token=TOKEN) as client:  # the agent's client
            session = client.create_session()
            assert client.reset(session, seed=1).observation.legal_actions
    finally:
        running.drain(grace=0)


def test_trainer_with_a_token_refuses_every_call_without_it(trainer_factory: Any) -> None:
    address, hub = trainer_factory(token=TOKEN)
    assert_token_enforced(address, TRAINER_METHODS)
    assert hub.agents == {}  # the Register that carried the token was for another model: refused


def test_node_env_server_with_a_token_refuses_every_call_without_it(tmp_path: Path) -> None:
    example = ROOT / "examples" / "node-env-server"
    node, server_js = shutil.which("node"), example / "dist" / "server.js"
    if node is None or not server_js.exists():
        pytest.skip("the Node example is not built (tests/integration/test_node_env_server.py builds it)")
    ready = tmp_path / "port"
    argv = [node, str(server_js), "--host", "127.0.0.1", "--port", "0", "--ready-file", str(ready)]
    with (tmp_path / "node.log").open("w") as log:
        process = start_process([*argv, "--token", TOKEN], cwd=example, stdout=log, stderr=subprocess.STDOUT)
    try:
        port = wait_ready(process, ready, name="the Node server", log=tmp_path / "node.log", timeout=30)
        # the six unary methods it serves (no BatchStepStream); grpc-js answers request bytes that do
        # not parse with INTERNAL before the token is looked at, so only well-formed requests here
        unary = [m for m in ENV_METHODS if not (m[1] or m[2])]
        assert len(unary) == 6
        assert_token_enforced(f"127.0.0.1:{port}", unary, garbage=b"")
    finally:
        process.terminate()
        process.wait(timeout=15)


# ---------------------------------------------------------------------------------------------
# TLS and mutual TLS
# ---------------------------------------------------------------------------------------------


def unavailable(make_client: Any) -> bool:
    try:
        with make_client() as client:
            client.describe()
    except EnvCallError as exc:
        return exc.code == grpc.StatusCode.UNAVAILABLE
    return False


def test_env_server_over_tls_and_mutual_tls(certs: Certificates) -> None:
    tls = start_server(
        ServerConfig(port=0, host="127.0.0.1", tls_cert=certs.server_cert, tls_key=certs.server_key),
        env_factory=CounterEnv,
    )
    mutual = start_server(
        ServerConfig(
            port=0,
            host="127.0.0.1",
            tls_cert=certs.server_cert,
            tls_key=certs.server_key,
            tls_client_ca=certs.ca,
            token=TOKEN,
        ),
        env_factory=CounterEnv,
    )
    a, b = f"127.0.0.1:{tls.port}", f"127.0.0.1:{mutual.port}"
    try:
        with EnvClient(a, tls_ca=certs.ca) as client:
            session = client.create_session()
            assert client.reset(session, seed=3).seed == 3
        assert unavailable(lambda: EnvClient(a, timeout=3))  # plaintext to a TLS server
        assert unavailable(lambda: EnvClient(a, tls_ca=certs.rogue_ca, timeout=3))  # untrusted server

        with EnvClient(
            b, token=TOKEN, tls_ca=certs.ca, tls_cert=certs.client_cert, tls_key=certs.client_key
        ) as client:
            assert client.reset(client.create_session(), seed=4).seed == 4
        assert unavailable(lambda: EnvClient(b, token=TOKEN, tls_ca=certs.ca, timeout=3))  # no client cert
        assert unavailable(
            lambda: EnvClient(
                b,
                token=TOKEN,
                tls_ca=certs.ca,
                tls_cert=certs.rogue_client_cert,
                tls_key=certs.rogue_client_key,
                timeout=3,
            )
        )
        client = EnvClient(b, tls_ca=certs.ca, tls_cert=certs.client_cert, tls_key=certs.client_key)
        with pytest.raises(EnvCallError) as refused, client:  # a good certificate does not replace the token
            client.describe()
        assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        tls.drain(grace=0)
        mutual.drain(grace=0)


def test_agent_registers_with_the_trainer_over_mutual_tls_with_a_token(
    certs: Certificates, trainer_factory: Any
) -> None:
    address, hub = trainer_factory(
        token=TOKEN, tls_cert=certs.server_cert, tls_key=certs.server_key, tls_client_ca=certs.ca
    )
    config = AgentConfig(
        ServersConfig(
            server=["unused:1"],
            trainer=address,
            token=TOKEN,
            tls_ca=certs.ca,
            tls_cert=certs.client_cert,
            tls_key=certs.client_key,
        ),
        run=AgentRunConfig(name="tls-agent"),
    )
    link = TrainerLink(config, fake_policy(), ["counter"], threading.Event())
    try:
        link.register()
        assert link.agent_id in hub.agents and link.latest_version == LATEST
    finally:
        link.close()

    def register(credentials: grpc.ChannelCredentials, metadata: Any = ()) -> grpc.StatusCode:
        with grpc.secure_channel(address, credentials) as channel:
            request = pb.RegisterRequest(agent_name="x", base_fingerprint=FINGERPRINT)
            try:
                pb_grpc.TrainerStub(channel).Register(request, timeout=3, metadata=metadata)
            except grpc.RpcError as exc:
                return exc.code()
        return grpc.StatusCode.OK

    ca = certs.ca.read_bytes()
    token = (("authorization", f"Bearer {TOKEN}"),)
    assert register(grpc.ssl_channel_credentials(ca), token) == grpc.StatusCode.UNAVAILABLE  # no client cert
    rogue = grpc.ssl_channel_credentials(
        ca, certs.rogue_client_key.read_bytes(), certs.rogue_client_cert.read_bytes()
    )
    assert register(rogue, token) == grpc.StatusCode.UNAVAILABLE
    good = grpc.ssl_channel_credentials(ca, certs.client_key.read_bytes(), certs.client_cert.read_bytes())
    assert register(good) == grpc.StatusCode.UNAUTHENTICATED
    assert register(good, token) == grpc.StatusCode.OK


# ---------------------------------------------------------------------------------------------
# only registered agents
# ---------------------------------------------------------------------------------------------


def test_the_trainer_takes_episodes_only_from_registered_agents(trainer_factory: Any) -> None:
    address, hub = trainer_factory(agent_timeout=0.5)
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.TrainerStub(channel)

        def submit(agent_id: str, episode_id: str) -> grpc.StatusCode:
            request = pb.SubmitEpisodeRequest(
                agent_id=agent_id, episode=valid_episode(), episode_id=episode_id
            )
            try:
                stub.SubmitEpisode(request, timeout=10)
            except grpc.RpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        for stranger in ("", "agent-123", "x" * 10_000):
            assert submit(stranger, "e-1") == grpc.StatusCode.NOT_FOUND
        assert hub.buffered_steps == 0 and hub.counters["episodes_accepted"] == 0

        agent_id = stub.Register(
            pb.RegisterRequest(agent_name="a", base_fingerprint=FINGERPRINT), timeout=10
        ).agent_id
        assert submit(agent_id, "e-1") == grpc.StatusCode.OK
        assert hub.buffered_steps == 2

        time.sleep(0.6)
        assert hub.expire_agents() == [agent_id]  # silent too long: forgotten, its slot freed
        assert submit(agent_id, "e-2") == grpc.StatusCode.NOT_FOUND
        assert hub.buffered_steps == 2  # its finished episode stays; nothing new got in


# ---------------------------------------------------------------------------------------------
# nothing from the network is unpickled
# ---------------------------------------------------------------------------------------------

LIBRARY = [ROOT / name for name in ("visact", "env_server", "agent", "trainer")]
PICKLING_MODULES = {
    "pickle",
    "_pickle",
    "cPickle",
    "dill",
    "cloudpickle",
    "marshal",
    "shelve",
    "joblib",
    "jsonpickle",
}
PICKLING_CALLS = {
    "read_pickle",  # pandas
    "broadcast_object_list",  # torch.distributed: pickles objects
    "all_gather_object",
    "gather_object",
    "scatter_object_list",
    "unsafe_load",  # yaml
    "full_load",
}


def unpickling_uses(source: str, where: str) -> list[str]:
    """Every way ``source`` could unpickle data: pickle-family imports, torch.load without
    weights_only=True, np.load with allow_pickle, yaml.load without a safe loader, eval/exec,
    and pickle-based collectives."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [
                f"{where}:{node.lineno} imports {n}" for n in names if n.split(".")[0] in PICKLING_MODULES
            ]
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
        keywords = {k.arg: k.value for k in node.keywords}
        if name in PICKLING_CALLS:
            found.append(f"{where}:{node.lineno} calls {name}")
        if isinstance(func, ast.Name) and name in ("eval", "exec"):
            found.append(f"{where}:{node.lineno} calls {name}")
        if name == "load" and owner == "torch":
            weights_only = keywords.get("weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                found.append(f"{where}:{node.lineno} calls torch.load without weights_only=True")
        if name == "load" and owner in ("np", "numpy"):
            allow = keywords.get("allow_pickle")
            if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                found.append(f"{where}:{node.lineno} calls np.load with allow_pickle")
        if name == "load" and owner == "yaml" and "Loader" not in keywords:
            found.append(f"{where}:{node.lineno} calls yaml.load without a safe Loader")
    return found


def test_the_scanner_finds_each_way_to_unpickle() -> None:
    source = """
import pickle
from dill import loads
import torch, numpy as np, yaml
torch.load(path)
torch.load(path, weights_only=False)
np.load(path, allow_pickle=True)
yaml.load(text)
eval(text)
torch.distributed.broadcast_object_list(objects)
model.eval()
torch.load(path, weights_only=True)
"""
    found = unpickling_uses(source, "x.py")
    assert len(found) == 8, found
    assert not any(":12 " in f or ":13 " in f for f in found)  # model.eval() and weights_only=True are fine


def test_no_library_code_path_unpickles_data() -> None:
    files = sorted(p for package in LIBRARY for p in package.rglob("*.py") if "_pb2" not in p.name)
    assert len(files) > 40
    found = [use for path in files for use in unpickling_uses(path.read_text(), str(path.relative_to(ROOT)))]
    assert found == [], "\n".join(found)


def test_published_weights_are_safetensors_and_checkpoints_load_weights_only() -> None:
    """Adapters on the wire are safetensors (no code runs on load); the only torch.load calls
    (optimizer and scheduler state, local files) pass weights_only=True (checked above)."""
    from visact.model.adapters import ADAPTER_FILE, adapter_bytes, attach_lora, lora_config, read_adapter

    assert ADAPTER_FILE.endswith(".safetensors")
    model = attach_lora(
        torch.nn.Sequential(torch.nn.Linear(4, 4)), lora_config(["0"], r=2, alpha=4, dropout=0.0)
    )
    data = adapter_bytes(model)
    header = int.from_bytes(data[:8], "little")
    assert data[8 : 8 + 1] == b"{" and 8 + header <= len(data)  # safetensors: u64 length, JSON header
    tensors, config = read_adapter(data)
    assert tensors and config["r"] == 2
    checkpoint = (ROOT / "trainer" / "checkpoint.py").read_text()
    assert checkpoint.count("torch.load(") == checkpoint.count("weights_only=True)") == 2
