"""Engines: what samples the answers of a batch of observations for the rollout.

One interface (``agent.engines.base.Engine``), two implementations: ``transformers`` (the default:
``model.generate`` with visact's own sampler, any Hugging Face VLM, any LoRA) and ``vllm`` (vLLM's
engine with versioned LoRA adapters hot-loaded from the trainer; language-model LoRA only).
``make_engine`` builds the one a config names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.engines.base import ENGINES, Engine, EngineError, SamplingSettings

if TYPE_CHECKING:
    from agent.config import AgentConfig

__all__ = ["ENGINES", "Engine", "EngineError", "SamplingSettings", "make_engine"]


def make_engine(config: AgentConfig) -> Engine:
    """The engine ``config.engine`` names, holding ``config.model`` (and ``config.adapter``)."""
    if config.engine == "vllm":
        from agent.engines.vllm_engine import VLLMEngine

        return VLLMEngine(
            config.model, dtype=config.dtype, adapter=config.adapter, seed=config.seed, threads=config.threads
        )
    from agent.engines.transformers_engine import TransformersEngine
    from agent.models import load_vlm

    loaded = load_vlm(
        config.model,
        dtype=config.dtype,
        device=config.device,
        adapter=config.adapter,
        attn_implementation=config.attn_implementation,
    )
    return TransformersEngine(loaded, seed=config.seed)
