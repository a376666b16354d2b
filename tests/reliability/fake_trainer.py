"""An in-process trainer for agent-side tests: the real TrainerServicer and Hub over real gRPC on
a free port, no learner. Versions are LoRA adapters made for the tiny VLM (real safetensors
files); ``fetch_modes`` lets a test decide what FetchWeights serves for a version, attempt by
attempt (good bytes, flipped, cut short, a broken stream, a pickle...)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import torch
from safetensors.torch import save as save_safetensors_bytes

from visact import rpc
from visact.model.adapters import CONFIG_KEY, adapter_bytes, attach_lora, lora_config, read_adapter
from visact.model.loading import LoadedVLM, load_vlm, lora_target_modules, weights_fingerprint
from visact.trainer.admission import model_admission
from visact.trainer.hub import Hub, PublishedVersion
from visact.trainer.service import SERVICE, ModelIdentity, TrainerServicer
from visact.trainer.v1 import trainer_pb2 as pb

TEMPERATURE = 1.0
#: what FetchWeights serves, given the version's good bytes; returns (chunks' data, abort after?)
FetchMode = Callable[[bytes], tuple[list[bytes], bool]]


def good(data: bytes) -> tuple[list[bytes], bool]:
    return [data[i : i + 65536] for i in range(0, len(data), 65536)], False


def flipped(data: bytes) -> tuple[list[bytes], bool]:
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0x40
    return good(bytes(damaged))[0], False


def cut_short(data: bytes) -> tuple[list[bytes], bool]:
    return good(data[: len(data) // 2])[0], False


def broken_stream(data: bytes) -> tuple[list[bytes], bool]:
    return good(data)[0][:1], True  # one chunk, then the stream fails


class ScriptedServicer(TrainerServicer):
    """The real servicer; FetchWeights follows a per-version script of modes (default: good)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fetch_modes: dict[int, list[FetchMode]] = {}
        self.fetches: dict[int, int] = {}
        self.lock = threading.Lock()

    async def FetchWeights(
        self, request: pb.FetchWeightsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WeightsChunk]:
        await self._known_agent(request.agent_id, context)
        published = self.hub.versions.get(request.version)
        if published is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"version {request.version} is not kept")
        assert published is not None
        with self.lock:
            attempt = self.fetches.get(request.version, 0)
            self.fetches[request.version] = attempt + 1
            script = self.fetch_modes.get(request.version, [])
        mode = script[min(attempt, len(script) - 1)] if script else good
        parts, abort = mode(published.path.read_bytes())
        offset = 0
        for part in parts:
            yield pb.WeightsChunk(
                version=published.version,
                sha256=published.sha256,
                size_bytes=published.size_bytes,
                offset=offset,
                data=part,
                file_name=published.path.name,
            )
            offset += len(part)
        if abort:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the connection broke (test)")


class FakeTrainer:
    """Hub + scripted servicer on 127.0.0.1:<free port>; publish adapters with ``publish``."""

    def __init__(self, directory: Path, *, max_policy_lag: int = 1, buffer_steps: int = 64) -> None:
        self.directory = directory
        self.trainer_model = load_vlm("tiny", device="cpu")
        self.fingerprint = weights_fingerprint(self.trainer_model.model)
        targets = lora_target_modules(self.trainer_model.model, self.trainer_model.traits)
        peft = attach_lora(self.trainer_model.model, lora_config(targets, r=4, alpha=8, dropout=0.0))
        self.template, self.lora = read_adapter(adapter_bytes(peft))
        self.hub = Hub(
            buffer_steps=buffer_steps, max_policy_lag=max_policy_lag, agent_timeout=60.0, keep_versions=3
        )
        admission = model_admission(
            self.trainer_model,
            vocab_size=int(self.trainer_model.base_model.get_output_embeddings().weight.shape[0]),
            max_tokens=int(self.trainer_model.tokenizer.model_max_length),
            temperature=TEMPERATURE,
            max_image_pixels=0,
            buffer_bytes=64 << 20,
        )
        identity = ModelIdentity("tiny", self.fingerprint, admission)
        sampling = pb.SamplingConfig(
            temperature=TEMPERATURE, max_new_tokens=6, chain_of_thought=False, format_penalty=0.0
        )
        self.servicer = ScriptedServicer(self.hub, identity, sampling, "fake-run")
        self.server = rpc.Server(rpc.Listen("127.0.0.1", 0, 64 << 20), [rpc.Service(SERVICE, self.servicer)])
        self.port = self.server.port
        self.address = f"127.0.0.1:{self.port}"

    def adapter(self, version: int) -> bytes:
        """A valid adapter whose LoRA B matrices are filled with a value that names the version."""
        tensors = {
            name: torch.full_like(t, 0.001 * version) if "lora_B" in name else t.clone()
            for name, t in self.template.items()
        }
        return save_safetensors_bytes(tensors, metadata={CONFIG_KEY: json.dumps(self.lora)})

    def publish(self, version: int, data: bytes | None = None) -> PublishedVersion:
        """Write ``data`` (default: ``adapter(version)``) as the version and announce it."""
        data = self.adapter(version) if data is None else data
        path = self.directory / f"v{version:06d}" / "adapter.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        published = PublishedVersion(version, path, hashlib.sha256(data).hexdigest(), len(data), time.time())
        self.hub.publish(published)
        return published

    def close(self) -> None:
        self.hub.close()
        self.server.stop(grace=None)


def lora_state(loaded: LoadedVLM) -> dict[str, torch.Tensor]:
    """A copy of the LoRA tensors a model runs now (empty before the first adapter)."""
    if not hasattr(loaded.model, "peft_config"):
        return {}
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(loaded.model).items()}
