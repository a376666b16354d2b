"""The vLLM engine: vLLM samples, visact keeps the prompts, the parsing and the records.

- Prompts are rendered by the checkpoint's own processor (``visact.model.generation.render_prompt``) and
  handed to vLLM with the image, so vLLM expands the image tokens itself; the prompt ids it returns
  are the ones the learner re-scores. The sampling distribution is visact's: special tokens other
  than the stop tokens are not allowed (``allowed_token_ids``), then temperature, then top-p, and
  the log-prob of each sampled token is taken from that processed distribution
  (``logprobs_mode="processed_logprobs"``; vLLM's default is the raw one, before temperature).
- Each weights version is a LoRA adapter written to this machine's disk (a peft directory under a
  private temporary directory, removed on exit: nothing is shared with the trainer), validated
  against the base model's layers, and loaded with ``add_lora`` under a new LoRA id: a bad one raises
  there and the engine runs on (passed straight to ``generate``, a bad path kills vLLM's engine).
  The newest ``keep_versions`` versions stay loaded and a batch mixes them, one per request; older
  ones are removed.
- vLLM adapts the language model only: LoRA on the vision tower or the projector is refused at
  ``check_lora`` (vLLM 0.32's experimental tower/connector LoRA failed at the first generate on a
  LLaVA here: it counts the tower's CLS token as an image token).
- The Hugging Face model is loaded once at start, on the CPU, for what the agent needs besides
  sampling: the processor and tokenizer, the base weights' fingerprint the trainer checks, and the
  shapes of its linear layers (to validate adapters); then it is dropped.
- The engine core runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0`` unless set): one
  process per agent, as with transformers. On CPU it runs eager (no torch.compile) and, when
  ``--threads`` is given, without pinning threads to cores (``VLLM_CPU_OMP_THREADS_BIND=nobind``).
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from visact.model.adapters import ADAPTER_FILE, AdapterError, read_adapter, visact_adapter_file
from visact.model.engines.base import EngineError, SamplingSettings
from visact.model.engines.vllm_checkpoint import vllm_checkpoint
from visact.model.generation import (
    ImageLike,
    Prompt,
    Sample,
    prompt_token_ids,
    render_prompt,
    suppressed_token_ids,
    token_char_spans,
)
from visact.model.loading import load_vlm, resolve_dtype, weights_fingerprint

log = logging.getLogger(__name__)

#: the ranks vLLM sizes its LoRA slots by (``LoRAConfig.max_lora_rank``)
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
_LORA_TENSOR = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<part>[AB])\.weight$")


def vllm_lora_rank(rank: int) -> int:
    """The smallest rank vLLM offers that holds ``rank``."""
    for offered in VLLM_LORA_RANKS:
        if offered >= rank:
            return offered
    raise EngineError(
        f"LoRA rank {rank} is above vLLM's largest ({VLLM_LORA_RANKS[-1]}); train with a smaller --lora-r"
    )


def _as_pil(image: ImageLike) -> Image.Image:
    return image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))


class VLLMEngine:
    """A VLM served by vLLM behind the engine interface (see the module docstring)."""

    name = "vllm"

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "auto",
        adapter: str | None = None,
        seed: int | None = 0,
        threads: int = 0,
        max_model_len: int | None = None,
    ) -> None:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        if threads:
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        self._dtype = resolve_dtype(dtype)
        loaded = load_vlm(model, dtype=self._dtype, device="cpu")
        base = loaded.base_model
        self.fingerprint = weights_fingerprint(loaded.model)
        vocab_size = int(base.get_output_embeddings().weight.shape[0])
        banned = set(suppressed_token_ids(loaded, vocab_size).tolist())
        self._allowed = [i for i in range(vocab_size) if i not in banned]
        #: module name -> (in_features, out_features) of every linear layer an adapter may target
        self._linear_shapes = {
            name: (module.in_features, module.out_features)
            for name, module in base.named_modules()
            if isinstance(module, torch.nn.Linear)
        }
        loaded.model = None  # vLLM holds the weights from here on
        self.loaded = loaded
        self._checkpoint = vllm_checkpoint(loaded.path, _export_cache())
        self._max_model_len = max_model_len
        self._rng = random.Random(seed)
        self._llm: Any = None
        self._rank: int | None = None  # LoRA slots sized for this rank once the engine is built
        self._keep = 1
        self._ids = itertools.count(1)
        #: loaded versions, oldest first: version -> (LoRARequest, its directory)
        self._versions: dict[int, tuple[Any, Path]] = {}
        self.version = 0
        self._disk = Path(tempfile.mkdtemp(prefix="visact-vllm-adapters-"))
        atexit.register(shutil.rmtree, self._disk, ignore_errors=True)
        if adapter is not None:
            tensors, lora = _read_adapter_path(adapter)
            self.load_version(0, tensors, lora)

    # ------------------------------------------------------------------ the engine
    def _engine(self) -> Any:
        """vLLM's ``LLM``, built on first use with LoRA slots for the rank known by then."""
        if self._llm is not None:
            return self._llm
        from vllm import LLM
        from vllm.platforms import current_platform

        options: dict[str, Any] = {
            "model": self._checkpoint,
            "dtype": _DTYPE_NAMES.get(self._dtype, "auto"),
            "seed": self._rng.randrange(1 << 31),
            "limit_mm_per_prompt": {"image": 1},
            "logprobs_mode": "processed_logprobs",
            "enforce_eager": current_platform.is_cpu(),
        }
        if self._max_model_len is not None:
            options["max_model_len"] = self._max_model_len
        if self._rank is not None:
            options.update(
                enable_lora=True,
                max_lora_rank=vllm_lora_rank(self._rank),
                max_loras=self._keep,
                max_cpu_loras=self._keep + 1,
            )
        started = time.monotonic()
        self._llm = LLM(**options)
        log.info(
            "vllm engine built",
            extra={"seconds": round(time.monotonic() - started, 2), "lora_rank": self._rank},
        )
        return self._llm

    # ------------------------------------------------------------------ sampling
    def sample(
        self,
        images: Sequence[ImageLike],
        prompts: Sequence[Prompt],
        settings: SamplingSettings,
        versions: Sequence[int | None] | None = None,
    ) -> list[Sample]:
        from vllm import SamplingParams

        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images for {len(prompts)} prompts; give one image per prompt")
        if settings.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {settings.max_new_tokens}")
        if not 0.0 < settings.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {settings.top_p}")
        llm = self._engine()
        wanted = list(versions) if versions is not None else [None] * len(prompts)
        used = [v if v in self._versions else self.version for v in wanted]
        requests = [
            {"prompt": render_prompt(self.loaded, prompt), "multi_modal_data": {"image": _as_pil(image)}}
            for image, prompt in zip(images, prompts, strict=True)
        ]
        params = [
            SamplingParams(
                temperature=max(settings.temperature, 0.0),
                top_p=settings.top_p,
                max_tokens=settings.max_new_tokens,
                logprobs=0,  # the sampled token's, from the processed distribution
                seed=self._rng.randrange(1 << 31),
                allowed_token_ids=self._allowed,
                stop_token_ids=list(self.loaded.stop_ids),
                detokenize=False,  # visact decodes with the checkpoint's tokenizer, as the learner does
            )
            for _ in requests
        ]
        loras = [self._versions[v][0] if v in self._versions else None for v in used]
        outputs = llm.generate(requests, params, lora_request=loras, use_tqdm=False)
        stop_ids = set(self.loaded.stop_ids)
        samples = []
        for output, version in zip(outputs, used, strict=True):
            completion = output.outputs[0]
            generated = list(completion.token_ids)
            log_probs = [
                float(step[token].logprob) for step, token in zip(completion.logprobs, generated, strict=True)
            ]
            text, spans = token_char_spans(self.loaded.tokenizer, generated)
            samples.append(
                Sample(
                    prompt_ids=list(output.prompt_token_ids),
                    generated_ids=generated,
                    log_probs=log_probs,
                    text=text,
                    token_spans=spans,
                    finished=bool(generated) and generated[-1] in stop_ids,
                    version=version,
                )
            )
        return samples

    def prompt_ids(self, images: Sequence[ImageLike], prompts: Sequence[Prompt]) -> list[list[int]]:
        return prompt_token_ids(self.loaded, images, prompts)  # the processor's, as vLLM's are (tested)

    def score(
        self,
        images: Sequence[ImageLike],
        prompt_ids: Sequence[Sequence[int]],
        generated_ids: Sequence[Sequence[int]],
        settings: SamplingSettings,
    ) -> list[list[float]]:
        raise EngineError(
            "the vllm engine does not score given answers (vLLM's prompt log-probs are not at the "
            "sampling temperature); use --engine transformers with --action-choice likeliest"
        )

    # ------------------------------------------------------------------ weights versions
    def check_lora(self, target_modules: Sequence[str], rank: int) -> None:
        traits = self.loaded.traits
        unadaptable = set(traits.vision_modules) | set(traits.projector_modules)
        refused = sorted(m for m in target_modules if set(m.split(".")) & unadaptable)
        if refused:
            raise EngineError(
                f"the trainer's LoRA adapts {len(refused)} layers of the vision tower or the projector "
                f"(e.g. {refused[0]}), which vLLM does not adapt; start `trainer serve` with "
                "--no-lora-vision --no-lora-projector, or run this agent with --engine transformers"
            )
        vllm_lora_rank(rank)
        if self._llm is not None and self._rank is None:
            raise EngineError(
                "the vLLM engine was built without LoRA slots; restart the agent to load adapters"
            )
        if (
            self._llm is not None
            and self._rank is not None
            and vllm_lora_rank(rank) > vllm_lora_rank(self._rank)
        ):
            raise EngineError(
                f"the vLLM engine was built for LoRA rank {self._rank}, the adapters have {rank}; restart the agent"
            )
        self._rank = max(self._rank or 0, rank)

    def keep_versions(self, count: int) -> None:
        if count < 1:
            raise ValueError(f"keep at least one version, got {count}")
        if self._llm is not None and count > self._keep and self._rank is not None:
            log.warning(
                "vllm engine built for fewer versions at once", extra={"built": self._keep, "asked": count}
            )
            return
        self._keep = count

    def load_version(self, version: int, tensors: dict[str, torch.Tensor], lora: dict[str, Any]) -> None:
        started = time.monotonic()
        rank = int(lora.get("r", 0) or 0)
        modules = self._validate(tensors, rank)  # AdapterError: this version is refused
        self.check_lora(modules, rank)  # EngineError: no version of this run can be loaded
        directory = self._disk / f"v{version:06d}-{next(self._ids)}"
        directory.mkdir()
        from safetensors.torch import save_file

        save_file(
            {k: v.contiguous() for k, v in tensors.items()}, str(directory / "adapter_model.safetensors")
        )
        (directory / "adapter_config.json").write_text(json.dumps(lora))
        self.load_adapter_dir(version, directory)
        log.info("lora loaded", extra={"version": version, "seconds": round(time.monotonic() - started, 4)})

    def load_adapter_dir(self, version: int, directory: Path) -> None:
        """Load the peft adapter directory ``directory`` (on this machine's disk) as ``version``, the
        newest; raises AdapterError when vLLM refuses it, the directory is then removed."""
        from vllm.lora.request import LoRARequest

        llm = self._engine()
        if self._rank is None:
            shutil.rmtree(directory, ignore_errors=True)
            raise EngineError(
                "the vLLM engine was built without LoRA slots; restart the agent to load adapters"
            )
        request = LoRARequest(f"v{version}", next(self._ids), str(directory))
        try:
            llm.llm_engine.add_lora(request)
        except Exception as exc:  # vLLM raises what its loaders raise (safetensors, json, ValueError, ...)
            shutil.rmtree(directory, ignore_errors=True)
            raise AdapterError(
                f"vLLM refused the adapter of version {version}: {type(exc).__name__}: {exc}"
            ) from exc
        if version in self._versions:
            self._unload(version)
        self._versions[version] = (request, directory)
        self.version = version
        for old in sorted(self._versions)[: -self._keep]:
            self._unload(old)

    def loaded_versions(self) -> list[int]:
        """The versions a request may be pinned to, oldest first."""
        return sorted(self._versions)

    def _unload(self, version: int) -> None:
        request, directory = self._versions.pop(version)
        self._engine().llm_engine.remove_lora(request.lora_int_id)
        shutil.rmtree(directory, ignore_errors=True)

    def _validate(self, tensors: dict[str, torch.Tensor], rank: int) -> list[str]:
        """The adapted modules, once every tensor is checked to be the LoRA A or B of a linear layer
        of the base model with its shape, and each module to have both."""
        parts: dict[str, set[str]] = {}
        for name, tensor in tensors.items():
            match = _LORA_TENSOR.match(name)
            if match is None:
                raise AdapterError(f"adapter tensor {name!r} is not a LoRA A/B weight of a linear layer")
            module, part = match["module"], match["part"]
            if module not in self._linear_shapes:
                raise AdapterError(
                    f"adapter tensor {name!r} adapts {module!r}, not a linear layer of this model"
                )
            in_features, out_features = self._linear_shapes[module]
            expected = (rank, in_features) if part == "A" else (out_features, rank)
            if tuple(tensor.shape) != expected:
                raise AdapterError(
                    f"adapter tensor {name} has shape {tuple(tensor.shape)}, expected {expected}"
                )
            parts.setdefault(module, set()).add(part)
        half = sorted(m for m, p in parts.items() if p != {"A", "B"})
        if half or not parts:
            raise AdapterError(f"adapter has no LoRA layers or only half of some: {half[:3]}")
        return sorted(parts)


def _read_adapter_path(path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, peft config) of ``--adapter``: a visact adapter file, or a peft directory."""
    single = visact_adapter_file(path)
    if single is not None:
        return read_adapter(single.read_bytes())
    directory = Path(path)
    weights, config = directory / "adapter_model.safetensors", directory / "adapter_config.json"
    if not (weights.is_file() and config.is_file()):
        raise AdapterError(
            f"{path} is neither a visact adapter ({ADAPTER_FILE}) nor a peft directory "
            "(adapter_model.safetensors + adapter_config.json)"
        )
    from safetensors.torch import load_file

    return load_file(str(weights)), json.loads(config.read_text())


def _export_cache() -> Path:
    from visact.cache import cache_root

    return cache_root() / "vllm-checkpoints"
