"""`trainer sft`'s one config, apart from the training code (and torch): a process that starts
`trainer sft` builds it and passes ``configcli.to_argv`` of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from visact.logs import LogFormat
from visact.model.options import attn_implementation_field, gradient_checkpointing_field

#: what SFT trains: the whole model, or a LoRA adapter
SFTMode = Literal["full", "lora"]


@dataclass
class SFTConfig:
    """Configuration of `trainer sft` (every field is a command-line option)."""

    data: Path = field(
        default=Path("demos/demos.jsonl"), metadata={"help": "demonstrations JSONL (visact demos)"}
    )
    model: str = field(default="tiny", metadata={"help": "Hugging Face VLM name or path, or 'tiny'"})
    out: Path = field(default=Path("runs/sft"), metadata={"help": "where the result is written"})
    mode: SFTMode = field(default="full", metadata={"help": "full fine-tune or a LoRA adapter"})
    steps: int = field(default=1000, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=8, metadata={"help": "demonstrations per step"})
    lr: float = field(default=2e-3, metadata={"help": "peak learning rate (cosine after warm-up)"})
    warmup_steps: int = field(default=50, metadata={"help": "linear warm-up steps"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    fact_weight: float = field(
        default=10.0, metadata={"help": "loss weight of image-dependent answer tokens"}
    )
    vision_warmup_steps: int = field(default=200, metadata={"help": "steps of the vision warm-up (0: none)"})
    vision_warmup_lr: float = field(default=2e-3, metadata={"help": "learning rate of the vision warm-up"})
    vision_lr_scale: float = field(
        default=0.0,
        metadata={"help": "vision tower and projector learning rate during SFT / --lr (0: frozen)"},
    )
    common_words: float = field(
        default=0.9,
        metadata={
            "help": "thought words in fewer than this fraction of the demonstrations' thoughts get "
            "--fact-weight (0: none)"
        },
    )
    symbol_words: str = field(
        default="",
        metadata={
            "help": "characters that are thought words on their own, e.g. '+-*/()' so that a "
            "formula's operators are weighted like its numbers (none: only letters and digits)"
        },
    )
    prefill_answer: bool = field(
        default=False,
        metadata={
            "help": 'put each answer\'s fixed opening ({"action":) in the prompt and train on the rest, '
            "as agents sample with --prefill-answer"
        },
    )
    lora_r: int = field(default=64, metadata={"help": "LoRA rank (--mode lora)"})
    lora_alpha: int = field(default=128, metadata={"help": "LoRA alpha (--mode lora)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout (--mode lora)"})
    max_seconds: float = field(default=0.0, metadata={"help": "stop after this much wall time (0: no limit)"})
    eval_fraction: float = field(default=0.1, metadata={"help": "demonstrations held out to measure reading"})
    eval_every: int = field(default=100, metadata={"help": "measure held-out fact accuracy every N steps"})
    dtype: str = field(default="auto", metadata={"help": "auto, float32, bfloat16"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, ..."})
    attn_implementation: str | None = attn_implementation_field()
    gradient_checkpointing: bool = gradient_checkpointing_field()
    seed: int = field(default=0, metadata={"help": "seed of the shuffle and the heads"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    log_format: LogFormat = field(default="text", metadata={"help": "json or text"})
    log_level: str = field(default="INFO", metadata={"help": "DEBUG, INFO, WARNING, ERROR"})

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError(f"need --steps >= 0 and --batch-size >= 1, got {self.steps}, {self.batch_size}")
        if self.fact_weight < 1:
            raise ValueError(
                f"--fact-weight weights image-dependent tokens up; give >= 1, got {self.fact_weight}"
            )
        if self.vision_lr_scale < 0 or not 0 <= self.common_words <= 1:
            raise ValueError(
                f"need --vision-lr-scale >= 0 and 0 <= --common-words <= 1, "
                f"got {self.vision_lr_scale}, {self.common_words}"
            )
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"--eval-fraction must be in [0, 1), got {self.eval_fraction}")
