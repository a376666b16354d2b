"""What ``--gradient-checkpointing`` costs in time and saves in memory, on one PPO update.

    python bench/activation_checkpointing.py --samples 16 --repeats 3

The same learner (the tiny VLM or ``--model``, LoRA) updates on the same samples (answers the
model wrote for NumberLine frames) with and without activation checkpointing, interleaved;
reported are the median update time of each, their ratio, and the bytes the forward pass keeps
for the backward (every tensor saved outside a checkpointed layer, summed over one micro batch).
On a GPU the bytes kept are most of the activation memory; the weights are not among them
under LoRA (frozen). Writes ``bench/results/activation_checkpointing.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from accelerate import Accelerator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from visact.model.generation import teacher_forced_log_probs
from visact.model.loading import checkpointing_in_eval_mode, load_vlm
from visact.orchestration.sampled_episodes import (
    answered_episodes,  # the learner tests' input, made the same way
)
from visact.trainer.config import LoraConfig, PPOConfig, TrainerConfig, VLMConfig
from visact.trainer.learner import Learner
from visact.wire.episodes import EpisodeData

RESULTS = Path(__file__).resolve().parent / "results"
PROMPT = (
    "You are playing NumberLine. Move the current number to the target with '+' or '-'. "
    'Answer in json: {"current number": "x", "target number": "x", "thoughts": "...", "action": "+"}'
)


def episodes_for(model: str, count: int, max_new_tokens: int) -> list[EpisodeData]:
    """``count`` one-step episodes whose answers the model wrote itself, rewards of both signs."""
    return answered_episodes(
        load_vlm(model, device="cpu"), count, prompt=PROMPT, max_new_tokens=max_new_tokens
    )


def learner_for(model: str, checkpointing: bool, micro_batch: int) -> Learner:
    config = TrainerConfig(
        vlm=VLMConfig(model=model, gradient_checkpointing=checkpointing),
        lora=LoraConfig(r=16, alpha=32),
        ppo=PPOConfig(
            ppo_epochs=1, minibatch_size=micro_batch, micro_batch_size=micro_batch, lr=1e-4, max_grad_norm=1.0
        ),
    )
    torch.manual_seed(0)
    return Learner(config, load_vlm(model, device="cpu"), Accelerator(cpu=True))


def bytes_kept_for_backward(learner: Learner, episodes: list[EpisodeData]) -> int:
    """Bytes of the tensors one forward pass (one micro batch) keeps for the backward."""
    steps = [e.steps[0] for e in episodes[: learner.config.ppo.micro_batch_size]]
    kept = [0]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        kept[0] += tensor.numel() * tensor.element_size()
        return tensor

    checkpointing = learner.config.vlm.gradient_checkpointing  # as the learner's own forward does it
    scope = checkpointing_in_eval_mode(learner.loaded.model) if checkpointing else nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), scope:
        teacher_forced_log_probs(
            learner.loaded, [s.image.pixels() for s in steps], [s.prompt_ids for s in steps],
            [s.generated_ids for s in steps], 1.0,
        )  # fmt: skip
    return kept[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--samples", type=int, default=16, help="samples per update")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "activation_checkpointing.json")
    args = parser.parse_args()

    episodes = episodes_for(args.model, args.samples, args.max_new_tokens)
    learners = {
        name: learner_for(args.model, name == "checkpointed", args.micro_batch)
        for name in ("plain", "checkpointed")
    }
    learners["plain"].update(episodes[:2])  # warm-up: the first update pays one-off costs
    learners["checkpointed"].update(episodes[:2])
    seconds: dict[str, list[float]] = {name: [] for name in learners}
    for _ in range(args.repeats):
        for name, learner in learners.items():
            started = time.perf_counter()
            learner.update(episodes)
            seconds[name].append(time.perf_counter() - started)
    kept = {name: bytes_kept_for_backward(learner, episodes) for name, learner in learners.items()}
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    result = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "answer_tokens_mean": statistics.mean(len(e.steps[0].generated_ids) for e in episodes),
        "prompt_tokens_mean": statistics.mean(len(e.steps[0].prompt_ids) for e in episodes),
        "update_seconds": seconds,
        "update_seconds_median": medians,
        "time_ratio_checkpointed_to_plain": medians["checkpointed"] / medians["plain"],
        "bytes_kept_for_backward": kept,
        "bytes_ratio_checkpointed_to_plain": kept["checkpointed"] / kept["plain"],
        "torch_threads": torch.get_num_threads(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"update: {medians['plain']:.2f} s plain, {medians['checkpointed']:.2f} s checkpointed "
        f"({result['time_ratio_checkpointed_to_plain']:.2f}x); kept for the backward per micro batch: "
        f"{kept['plain'] / 1e6:.1f} MB -> {kept['checkpointed'] / 1e6:.1f} MB "
        f"({result['bytes_ratio_checkpointed_to_plain']:.2f}x)"
    )


if __name__ == "__main__":
    main()
