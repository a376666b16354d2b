"""Probe the tiny VLM on this machine: size, speed, and whether it can learn to read NumberLine.

Two parts, each a few minutes of CPU on 2 threads (the machines are shared: keep runs modest):

``speed``  parameters, build and load time, ``generate_batch`` of 60 tokens at B=1/8/16, and one
           teacher-forced forward+backward at B=8 on real NumberLine prompts (full model and LoRA).
``read``   supervised training on NumberLine frames (``visact.env_server.games.numberline``), then greedy
           decoding of every state: are the numbers read and the action right? The tricks of
           the tiny-VLM probe notes (docs/learning-notes.md): few image tokens, the image-dependent answer tokens
           (digits, comparison words, the action) weighted x``--weight`` in the loss, and a short
           vision warm-up (the tower plus a throw-away linear head that classifies both digits).
           Six of the 30 (target, current) states are held out of training, each digit once per
           role, so the held-out accuracy says whether the model reads rather than memorizes.

Examples::

    python bench/tiny_vlm_probe.py speed
    python bench/tiny_vlm_probe.py read --steps 600 --image-size 64 --patch-size 16
    python bench/tiny_vlm_probe.py read --steps 600 --warmup-steps 0 --weight 1   # the plain baseline

Every run prints one JSON line of results at the end (also appended to ``--out`` if given).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from visact.env_server.games.numberline import NumberLine
from visact.model import tiny_vlm
from visact.model.generation import generate_batch, image_inputs, teacher_forced_log_probs
from visact.model.loading import LoadedVLM, load_vlm, lora_target_modules
from visact.model.prompts import build_messages, format_target

HELD_OUT = {(0, 3), (1, 5), (2, 0), (3, 1), (4, 2), (5, 4)}  # (target, current): each digit once per role
#: answer characters that depend on the image: digits, the comparison, the action
IMAGE_DEPENDENT = re.compile(r"\d|less|greater|increase|decrease|\"[+-]\"")


@dataclasses.dataclass
class State:
    target: int
    current: int
    image: np.ndarray
    messages: list[dict[str, Any]]
    answer: str
    action: str


def numberline_states() -> list[State]:
    env = NumberLine()
    states = []
    for target in range(6):
        for current in range(6):
            if target == current:
                continue
            env.reset(options={"target": target, "start": current})
            move = env.expert()
            messages = build_messages(env.task_text(), env.action_vocabulary, env.fact_keys)
            answer = format_target(move.facts, move.thoughts, move.action)
            states.append(State(target, current, env.render(), messages, answer, move.action))
    return states


def median_time(fn: Callable[[], Any], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    counts = {"total": 0, "vision": 0, "projector": 0, "text": 0, "embeddings+head": 0}
    for name, param in model.named_parameters():
        counts["total"] += param.numel()
        if "vision_tower" in name:
            counts["vision"] += param.numel()
        elif "multi_modal_projector" in name:
            counts["projector"] += param.numel()
        elif "embed_tokens" in name or "lm_head" in name:
            counts["embeddings+head"] += param.numel()
        else:
            counts["text"] += param.numel()
    return counts


def spec_from(args: argparse.Namespace) -> tiny_vlm.TinySpec:
    return dataclasses.replace(
        tiny_vlm.DEFAULT_SPEC,
        image_size=args.image_size,
        patch_size=args.patch_size,
        text_hidden=args.text_hidden,
        text_layers=args.text_layers,
        text_intermediate=args.text_hidden * 3,
        vision_hidden=args.vision_hidden,
        vision_intermediate=args.vision_hidden * 4,
        vision_layers=args.vision_layers,
    )


def build_and_load(spec: tiny_vlm.TinySpec, workdir: Path) -> tuple[LoadedVLM, float, float]:
    start = time.perf_counter()
    path = tiny_vlm.build_tiny_vlm(workdir / "tiny", spec)
    built = time.perf_counter() - start
    start = time.perf_counter()
    loaded = load_vlm(str(path), dtype="float32", device="cpu")
    return loaded, built, time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# speed
# ---------------------------------------------------------------------------------------------


def run_speed(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    spec = spec_from(args)
    loaded, build_s, load_s = build_and_load(spec, workdir)
    states = numberline_states()
    result: dict[str, Any] = {
        "part": "speed",
        "spec": dataclasses.asdict(spec),
        "params": parameter_counts(loaded.model),
        "build_s": round(build_s, 3),
        "load_s": round(load_s, 3),
        "vocab": len(loaded.tokenizer),
    }
    prompt_lengths = [len(ids) for ids in _prompt_ids(loaded, states[:8])]
    result["prompt_tokens_b8"] = prompt_lengths
    generator = torch.Generator().manual_seed(0)
    for batch in (1, 8, 16):
        chosen = [states[i % len(states)] for i in range(batch)]

        def sample(chosen: Sequence[State] = chosen) -> list[Any]:
            # stop tokens are allowed; a random policy rarely samples one within 60 tokens
            return generate_batch(
                loaded, [s.image for s in chosen], [s.messages for s in chosen], 60, 1.0, generator=generator
            )

        sample()  # warm up
        seconds = median_time(sample)
        tokens = sum(len(s.generated_ids) for s in sample())
        result[f"generate60_b{batch}_s"] = round(seconds, 3)
        result[f"generate60_b{batch}_tokens"] = tokens
    chosen = states[:8]
    answers = [[*loaded.tokenizer(s.answer, add_special_tokens=False).input_ids, 2] for s in chosen]
    prompts = _prompt_ids(loaded, chosen)
    result["answer_tokens_b8"] = [len(a) for a in answers]

    def forward_backward() -> None:
        out = teacher_forced_log_probs(
            loaded, [s.image for s in chosen], prompts, answers, 1.0, return_hidden=True
        )
        loss = -(out.log_probs.sum()) + (
            out.last_prompt_hidden.sum() if out.last_prompt_hidden is not None else 0
        )
        loss.backward()
        loaded.model.zero_grad(set_to_none=True)

    loaded.model.train()
    forward_backward()
    result["fwd_bwd_b8_full_s"] = round(median_time(forward_backward), 3)
    from peft import LoraConfig, get_peft_model

    loaded.model = get_peft_model(
        loaded.model, LoraConfig(r=8, lora_alpha=16, target_modules=lora_target_modules(loaded.model))
    )
    forward_backward()
    result["fwd_bwd_b8_lora8_s"] = round(median_time(forward_backward), 3)
    return result


def _prompt_ids(loaded: LoadedVLM, states: Sequence[State]) -> list[list[int]]:
    from visact.model.generation import prompt_token_ids

    return prompt_token_ids(loaded, [s.image for s in states], [s.messages for s in states])


# ---------------------------------------------------------------------------------------------
# read
# ---------------------------------------------------------------------------------------------


def answer_weights(loaded: LoadedVLM, answer: str, weight: float) -> tuple[list[int], list[float]]:
    """Answer token ids (+ the stop token) and per-token loss weights: ``weight`` on tokens that
    overlap an image-dependent character, 1 elsewhere."""
    encoded = loaded.tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
    dependent = np.zeros(len(answer), dtype=bool)
    for match in IMAGE_DEPENDENT.finditer(answer):
        dependent[match.start() : match.end()] = True
    weights = [weight if dependent[start:end].any() else 1.0 for start, end in encoded["offset_mapping"]]
    return [*encoded["input_ids"], loaded.stop_ids[0]], [*weights, 1.0]


def vision_warmup(loaded: LoadedVLM, states: Sequence[State], steps: int, lr: float, batch: int) -> float:
    """Train the vision tower (+ projector input) with a throw-away linear head on both digits."""
    model = loaded.model
    tower = model.model.vision_tower
    tokens, hidden = loaded.model.config.image_seq_length + 1, model.config.vision_config.hidden_size
    head = nn.Linear(tokens * hidden, 12)
    optimizer = torch.optim.AdamW([*tower.parameters(), *head.parameters()], lr=lr)
    rng = np.random.default_rng(1)
    accuracy = 0.0
    for _ in range(steps):
        chosen = [states[i] for i in rng.integers(len(states), size=batch)]
        pixels = image_inputs(loaded, [s.image for s in chosen])["pixel_values"]
        features = tower(pixel_values=pixels).last_hidden_state.flatten(1)
        logits = head(features)
        targets = torch.tensor([s.target for s in chosen])
        currents = torch.tensor([s.current for s in chosen])
        loss = nn.functional.cross_entropy(logits[:, :6], targets) + nn.functional.cross_entropy(
            logits[:, 6:], currents
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        accuracy = float(
            (
                (logits[:, :6].argmax(-1) == targets).float().mean()
                + (logits[:, 6:].argmax(-1) == currents).float().mean()
            )
            / 2
        )
    return accuracy


def evaluate(loaded: LoadedVLM, states: Sequence[State]) -> dict[str, float]:
    loaded.model.eval()
    correct = {"target": 0, "current": 0, "action": 0, "exact": 0, "json": 0}
    for start in range(0, len(states), 16):
        chunk = states[start : start + 16]
        samples = generate_batch(
            loaded, [s.image for s in chunk], [s.messages for s in chunk], 64, temperature=0.0
        )
        for state, sample in zip(chunk, samples, strict=True):
            try:
                answer = json.loads(sample.text)
                correct["json"] += 1
            except json.JSONDecodeError:
                answer = {}
            correct["target"] += answer.get("target number") == str(state.target)
            correct["current"] += answer.get("current number") == str(state.current)
            correct["action"] += answer.get("action") == state.action
            correct["exact"] += sample.text == state.answer
    loaded.model.train()
    return {key: round(value / len(states), 3) for key, value in correct.items()}


def run_read(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    spec = spec_from(args)
    loaded, _, _ = build_and_load(spec, workdir)
    states = numberline_states()
    train = [s for s in states if (s.target, s.current) not in HELD_OUT]
    held_out = [s for s in states if (s.target, s.current) in HELD_OUT]
    prompt_ids = dict(zip([id(s) for s in states], _prompt_ids(loaded, states), strict=True))
    answers = {id(s): answer_weights(loaded, s.answer, args.weight) for s in states}
    result: dict[str, Any] = {
        "part": "read",
        "spec": dataclasses.asdict(spec),
        "params": parameter_counts(loaded.model)["total"],
        "args": {k: v for k, v in vars(args).items() if k not in ("func", "out")},
        "prompt_tokens": len(prompt_ids[id(states[0])]),
        "answer_tokens": len(answers[id(states[0])][0]),
    }
    loaded.model.train()
    start = time.perf_counter()
    if args.warmup_steps:
        result["warmup_digit_accuracy"] = vision_warmup(
            loaded, train, args.warmup_steps, args.warmup_lr, args.batch
        )
    result["warmup_s"] = round(time.perf_counter() - start, 1)

    optimizer = torch.optim.AdamW(loaded.model.parameters(), lr=args.lr, weight_decay=0.0)

    def lr_factor(step: int) -> float:  # 50 warm-up steps, then cosine down to 10%
        if step < 50:
            return (step + 1) / 50
        progress = min(1.0, (step - 50) / max(1, args.steps - 50))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    rng = np.random.default_rng(args.seed)
    curve = []
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        chosen = [train[i] for i in rng.integers(len(train), size=args.batch)]
        out = teacher_forced_log_probs(
            loaded,
            [s.image for s in chosen],
            [prompt_ids[id(s)] for s in chosen],
            [answers[id(s)][0] for s in chosen],
            1.0,
        )
        weights = torch.zeros_like(out.log_probs)
        for row, state in enumerate(chosen):
            w = answers[id(state)][1]
            weights[row, : len(w)] = torch.tensor(w)
        loss = -(out.log_probs * weights).sum() / weights.sum()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(loaded.model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % args.eval_every == 0 or step == args.steps:
            point = {
                "step": step,
                "s": round(time.perf_counter() - start, 1),
                "loss": round(loss.item(), 4),
                "train": evaluate(loaded, train),
                "held_out": evaluate(loaded, held_out),
            }
            curve.append(point)
            print(json.dumps(point), flush=True)
            if time.perf_counter() - start > args.budget_s:
                break
    result["train_s"] = round(time.perf_counter() - start, 1)
    result["curve"] = curve
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("part", choices=["speed", "read"])
    parser.add_argument("--image-size", type=int, default=tiny_vlm.DEFAULT_SPEC.image_size)
    parser.add_argument("--patch-size", type=int, default=tiny_vlm.DEFAULT_SPEC.patch_size)
    parser.add_argument("--text-hidden", type=int, default=tiny_vlm.DEFAULT_SPEC.text_hidden)
    parser.add_argument("--text-layers", type=int, default=tiny_vlm.DEFAULT_SPEC.text_layers)
    parser.add_argument("--vision-hidden", type=int, default=tiny_vlm.DEFAULT_SPEC.vision_hidden)
    parser.add_argument("--vision-layers", type=int, default=tiny_vlm.DEFAULT_SPEC.vision_layers)
    parser.add_argument("--steps", type=int, default=600, help="supervised steps (read)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight", type=float, default=10.0, help="loss weight of image-dependent tokens")
    parser.add_argument("--warmup-steps", type=int, default=200, help="vision warm-up steps (0: none)")
    parser.add_argument("--warmup-lr", type=float, default=2e-3)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--budget-s", type=float, default=420.0, help="stop training after this long")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="append the JSON result line here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        run = run_speed if args.part == "speed" else run_read
        result = run(args, Path(tmp))
    result["torch_threads"] = torch.get_num_threads()
    line = json.dumps(result)
    print(line)
    if args.out is not None:
        with args.out.open("a") as handle:
            handle.write(line + "\n")


if __name__ == "__main__":
    main()
