"""Engines: what samples the answers of a batch of observations for the rollout.

One interface (``visact.model.engines.base.Engine``), two implementations: ``transformers`` (the default:
``model.generate`` with visact's own sampler, any Hugging Face VLM, any LoRA) and ``vllm`` (vLLM's
engine with versioned LoRA adapters hot-loaded from the trainer; language-model LoRA only).
``make_engine`` builds the one named.
"""

from __future__ import annotations

from visact.model.engines.base import ENGINES, Engine, EngineError, SamplingSettings

__all__ = ["ENGINES", "Engine", "EngineError", "SamplingSettings", "make_engine"]


def make_engine(
    engine: str,
    model: str,
    *,
    dtype: str = "auto",
    device: str = "auto",
    adapter: str | None = None,
    attn_implementation: str | None = None,
    seed: int = 0,
    threads: int = 0,
) -> Engine:
    """The engine named ``engine`` (one of ENGINES), holding ``model`` (and ``adapter``)."""
    if engine == "vllm":
        from visact.model.engines.vllm_engine import VLLMEngine

        return VLLMEngine(model, dtype=dtype, adapter=adapter, seed=seed, threads=threads)
    from visact.model.engines.transformers_engine import TransformersEngine
    from visact.model.loading import load_vlm

    loaded = load_vlm(
        model, dtype=dtype, device=device, adapter=adapter, attn_implementation=attn_implementation
    )
    return TransformersEngine(loaded, seed=seed)
