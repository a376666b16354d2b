"""Model options every process that loads a model takes alike (declared once, so that
``agent-client``, ``trainer serve`` and ``trainer sft`` cannot drift)."""

from __future__ import annotations

from dataclasses import field
from typing import Any, Literal

#: what samples answers (agent-client --engine)
EngineName = Literal["transformers", "vllm"]
#: how an answer becomes an action: ``text`` the action it names, ``likeliest`` the model's choice
#: among the legal actions after its CoT (``visact.agent.action_choice``)
ActionChoice = Literal["text", "likeliest"]

ATTN_IMPLEMENTATION_HELP = "attention kernel: sdpa (unset: transformers' default), eager, flash_attention_2"
GRADIENT_CHECKPOINTING_HELP = "recompute activations in the backward pass: far less memory, some more time"


def attn_implementation_field() -> Any:
    """``--attn-implementation``, the same in every process that loads a model."""
    return field(default=None, metadata={"help": ATTN_IMPLEMENTATION_HELP})


def gradient_checkpointing_field() -> Any:
    """``--gradient-checkpointing``, the same in every process that trains."""
    return field(default=False, metadata={"help": GRADIENT_CHECKPOINTING_HELP})
