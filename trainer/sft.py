"""`trainer sft`: the supervised warm start (the paper's step 1) on demonstration JSONL.

    trainer sft --data demos.jsonl --model tiny --out runs/sft [--mode full|lora]

What makes a small VLM read the image rather than learn the answer format alone:
1. **Weighted loss.** The tokens whose value depends on the image get ``--fact-weight`` times
   the weight of the format tokens, which otherwise dominate the loss (~80 format tokens vs a
   few image-dependent ones). They are the values of the facts read off the image and of the
   action, and the *informative words* of the thoughts: words found in fewer than
   ``--common-words`` of the demonstrations' thoughts (the digits and "less"/"greater" of
   NumberLine's "The current number 2 is less than the target 4, so I should increase it.",
   never its template words). Without them the model reads the facts but does not learn the
   comparison that turns them into the action.
   ``--symbol-words '+-*/()'`` makes each of those characters a word
   of its own: a formula's operators are then weighted like its numbers (EZPoints' "*", drowned
   by "+" without it).
2. **Vision warm-up.** Before SFT, the vision tower and projector are trained for
   ``--vision-warmup-steps`` with throw-away linear heads that classify each fact's value from
   the image features (flattened, so position is kept); the heads are then dropped.
3. **Frozen vision.** During SFT the vision tower and projector learn at ``--vision-lr-scale``
   times ``--lr`` (default 0: they keep the warm-up's weights). At the full rate the language
   model's first, still random gradients wash the warm-up out and reading takes ~2x longer.
Output: ``--mode full`` writes a whole model directory (``OUT/model``: use it as ``--model``
for `trainer serve` and the agents); ``--mode lora`` writes ``OUT/adapter.safetensors``
(`trainer serve --init-adapter OUT`).
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from visact.trainer.sft_config import SFTConfig

log = logging.getLogger("trainer.sft")


# ---------------------------------------------------------------------------------------------
# Demonstrations
# ---------------------------------------------------------------------------------------------


@dataclass
class Demo:
    """One demonstration, loaded."""

    image: np.ndarray
    prompt: str
    target: str
    facts: dict[str, str]
    weighted_keys: tuple[str, ...]  # answer keys whose values depend on the image (facts, action)
    thoughts: str = ""


def load_demos(path: Path) -> list[Demo]:
    """Read a demonstrations JSONL; every problem is reported with its line number."""
    from visact.model.prompts import instruction_text

    if not path.exists():
        raise FileNotFoundError(f"no demonstrations at {path}; write some with `visact demos -o {path}`")
    demos = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            image_path = (path.parent / row["image"]).resolve()
            with Image.open(image_path) as pil:
                image = np.asarray(pil.convert("RGB"))
            prompt = row.get("prompt") or instruction_text(
                row["task"], row["legal_actions"], row.get("fact_keys", ()), cot=True
            )
            facts = {str(k): str(v) for k, v in (row.get("facts") or {}).items()}
            thoughts = str(row.get("thoughts") or "")
            demos.append(Demo(image, prompt, row["target"], facts, (*facts, "action"), thoughts))
        except (KeyError, ValueError, OSError) as exc:
            raise ValueError(
                f"{path}:{number}: not a usable demonstration ({exc!r}); see `visact demos --help`"
            ) from exc
    if not demos:
        raise ValueError(f"{path} holds no demonstrations")
    return demos


def value_spans(target: str, keys: Sequence[str]) -> list[tuple[int, int]]:
    """Character spans of the values of ``keys`` in a JSON answer string (the image-dependent parts)."""
    spans = []
    for key in keys:
        match = re.search(
            re.escape(json.dumps(key, ensure_ascii=False)) + r'\s*:\s*"((?:[^"\\]|\\.)*)"', target
        )
        if match:
            spans.append(match.span(1))
    return spans


def word_pattern(symbols: str = "") -> re.Pattern[str]:
    """What a word of the thoughts is: a run of letters, digits and ``_``, or any one of
    ``symbols`` on its own (the ``+ - * / ( )`` of a formula: with them a plan's operators are
    weighted like its numbers)."""
    return re.compile(r"\w+" + (f"|[{re.escape(symbols)}]" if symbols else ""))


def informative_words(thoughts: Sequence[str], below: float, symbols: str = "") -> frozenset[str]:
    """Words found in fewer than ``below`` of the (non-empty) ``thoughts``: the parts that change
    with the observation, as opposed to the template every thought shares."""
    word = word_pattern(symbols)
    texts = [t for t in thoughts if t]
    counts = Counter(found for text in texts for found in set(word.findall(text)))
    return frozenset(found for found, n in counts.items() if n < below * len(texts))


def thought_spans(target: str, words: frozenset[str], symbols: str = "") -> list[tuple[int, int]]:
    """Character spans of ``words`` inside the ``"thoughts"`` value of a JSON answer string."""
    word = word_pattern(symbols)
    spans = []
    for start, end in value_spans(target, ["thoughts"]):
        for match in word.finditer(target, start, end):
            if match.group() in words:
                spans.append(match.span())
    return spans


def token_weights(
    offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]], weight: float
) -> list[float]:
    """``weight`` for tokens overlapping any span, 1 for the others."""
    return [weight if any(s < e and a < e and b > s for s, e in spans) else 1.0 for a, b in offsets]


# ---------------------------------------------------------------------------------------------
# Vision warm-up
# ---------------------------------------------------------------------------------------------


def image_features(loaded: Any, images: Sequence[np.ndarray]) -> Tensor:
    """The projected image features the language model sees, flattened per image: (B, tokens * hidden)."""
    from visact.model.generation import image_inputs

    output = loaded.base_model.get_image_features(**image_inputs(loaded, images))
    features = getattr(output, "pooler_output", None)
    if features is None:
        features = output.last_hidden_state if hasattr(output, "last_hidden_state") else output
    if isinstance(features, list | tuple):
        features = torch.stack([f.reshape(-1) for f in features])
    return features.reshape(len(images), -1).float()


LIST_FACT = re.compile(r"^\[(.*)\]$")


def image_labels(demos: Sequence[Demo]) -> list[dict[str, str]]:
    """What the vision warm-up classifies, per demonstration: the facts read off the image.

    A list-valued fact (``"[7, 2, 4, 2]"``, ``"[A, 7]"``) is one label per element
    (``cards[0]``...: four cards are four small classifications, not one of thousands); a fact
    every demonstration's prompt already states (the formula so far, given as text) is left out:
    it is not on the image.
    """
    in_prompt = Counter(k for d in demos for k, v in d.facts.items() if v in d.prompt)
    given = Counter(k for d in demos for k in d.facts)
    text_facts = {k for k, n in given.items() if in_prompt[k] == n}
    labels = []
    for demo in demos:
        out: dict[str, str] = {}
        for key, value in demo.facts.items():
            if key in text_facts:
                continue
            listed = LIST_FACT.match(value.strip())
            if listed is None:
                out[key] = value
                continue
            for i, element in enumerate(listed.group(1).split(",")):
                out[f"{key}[{i}]"] = element.strip()
        labels.append(out)
    return labels


def vision_warmup(
    loaded: Any, demos: Sequence[Demo], config: SFTConfig, rng: random.Random
) -> dict[str, float]:
    """Train the vision tower + projector to tell each fact's values apart (``image_labels``);
    returns the heads' final accuracies."""
    labels = image_labels(demos)
    keys = sorted({k for row in labels for k in row})
    classes: dict[str, list[str]] = {}
    for key in keys:
        counts = Counter(row[key] for row in labels if key in row)
        values = [v for v, _ in counts.most_common(64)]
        if len(values) > 1:
            classes[key] = values
    if not classes or not config.vision_warmup_steps:
        return {}
    width = image_features(loaded, [demos[0].image]).shape[1]
    heads = nn.ModuleDict({_safe(k): nn.Linear(width, len(v)) for k, v in classes.items()}).to(loaded.device)
    vision_params = vision_parameters(loaded)
    optimizer = torch.optim.AdamW([*vision_params, *heads.parameters()], lr=config.vision_warmup_lr)
    loaded.model.train()
    correct: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    for step in range(config.vision_warmup_steps):
        batch = rng.sample(range(len(demos)), min(config.batch_size * 2, len(demos)))
        features = image_features(loaded, [demos[i].image for i in batch])
        loss = torch.zeros((), device=features.device)
        for key, values in classes.items():
            rows = [j for j, i in enumerate(batch) if labels[i].get(key) in values]
            if not rows:
                continue
            targets = [values.index(labels[batch[j]][key]) for j in rows]
            labels_tensor = torch.tensor(targets, device=features.device)
            logits = heads[_safe(key)](features[rows])
            loss = loss + nn.functional.cross_entropy(logits, labels_tensor)
            if step >= config.vision_warmup_steps - 20:
                correct[key] += int((logits.argmax(-1) == labels_tensor).sum())
                seen[key] += len(rows)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    loaded.model.eval()
    return {f"vision_warmup/{k}": correct[k] / seen[k] for k in seen}


def vision_parameters(loaded: Any) -> list[nn.Parameter]:
    """The trainable parameters of the vision tower and the projector (LoRA's only, under LoRA),
    found by the module names in the family's traits."""
    parts = set(loaded.traits.vision_modules) | set(loaded.traits.projector_modules)
    return [p for n, p in loaded.model.named_parameters() if p.requires_grad and parts & set(n.split("."))]


def _safe(key: str) -> str:
    return re.sub(r"\W", "_", key)


# ---------------------------------------------------------------------------------------------
# SFT
# ---------------------------------------------------------------------------------------------


@dataclass
class Encoded:
    prompt_ids: list[int]
    answer_ids: list[int]
    weights: list[float]
    weighted: list[bool]


def answer_opening(target: str) -> str:
    """The fixed opening of a demonstration's answer (``{"action":``), that ``--prefill-answer``
    moves into the prompt; ValueError if the target is not a JSON object that starts with it."""
    from visact.model.prompts import answer_prefill

    try:
        answer = json.loads(target)
    except ValueError as exc:
        raise ValueError(
            f"the target {target!r} is not JSON; --prefill-answer needs visact demos' answers"
        ) from exc
    if not isinstance(answer, dict) or not answer:
        raise ValueError(f"the target {target!r} is not a JSON object with keys; --prefill-answer needs one")
    opening = answer_prefill(next(iter(answer)))
    if not target.startswith(opening):
        raise ValueError(
            f"the target {target!r} does not start with {opening!r} (write it as visact demos does)"
        )
    return opening


def encode(
    loaded: Any,
    demo: Demo,
    fact_weight: float,
    words: frozenset[str] = frozenset(),
    prefill: bool = False,
    symbols: str = "",
) -> Encoded:
    """Prompt ids through the model's chat template; answer ids with the stop token; loss weights
    (``fact_weight`` on the facts, the action and the thoughts' informative ``words``).
    ``prefill``: the answer's opening ends the prompt (as the assistant's turn begun) and the
    answer ids are what follows it, as an agent with ``--prefill-answer`` samples them."""
    from visact.model.generation import prompt_token_ids
    from visact.model.prompts import prefill_message

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": demo.prompt}]}]
    opening = answer_opening(demo.target) if prefill else ""
    if opening:
        messages.append(prefill_message(opening))
    prompt = prompt_token_ids(loaded, [demo.image], [messages])[0]
    tokens = loaded.tokenizer(
        demo.target[len(opening) :], add_special_tokens=False, return_offsets_mapping=True
    )
    ids = list(tokens["input_ids"])
    spans = value_spans(demo.target, demo.weighted_keys) + thought_spans(demo.target, words, symbols)
    offsets = [(start + len(opening), end + len(opening)) for start, end in tokens["offset_mapping"]]
    weights = token_weights(offsets, spans, fact_weight)
    stop = loaded.stop_ids[0] if loaded.stop_ids else loaded.tokenizer.eos_token_id
    return Encoded(prompt, [*ids, int(stop)], [*weights, 1.0], [w > 1.0 for w in weights] + [False])


def run_sft(config: SFTConfig) -> int:
    summary = train_sft(config)
    print(json.dumps(summary, indent=2))
    return 0


def train_sft(config: SFTConfig) -> dict[str, Any]:
    """Warm-start a VLM on demonstrations; writes the result under ``config.out`` and returns a summary."""
    from visact.model.generation import teacher_forced_log_probs
    from visact.model.loading import enable_activation_checkpointing, load_vlm

    started = time.monotonic()
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    demos = load_demos(config.data)
    rng.shuffle(demos)
    held = int(len(demos) * config.eval_fraction)
    eval_demos, train_demos = demos[:held], demos[held:]
    loaded = load_vlm(
        config.model, dtype=config.dtype, device=config.device, attn_implementation=config.attn_implementation
    )
    if config.gradient_checkpointing:
        enable_activation_checkpointing(loaded.model)
    summary: dict[str, Any] = {"config": {k: str(v) for k, v in asdict(config).items()}, "demos": len(demos)}
    if config.mode == "lora":
        # before the warm-up, so that what it learns lands in the adapter (the base stays as is)
        from visact.model.adapters import attach_lora, lora_config
        from visact.model.loading import lora_target_modules

        targets = lora_target_modules(loaded.model, loaded.traits)
        loaded.model = attach_lora(
            loaded.model,
            lora_config(targets, r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout),
        )
    summary.update(vision_warmup(loaded, train_demos, config, rng))

    vision = {id(p) for p in vision_parameters(loaded)}
    parameters = [p for p in loaded.model.parameters() if p.requires_grad]
    language = [p for p in parameters if id(p) not in vision]
    groups: list[dict[str, Any]] = [{"params": language, "lr": config.lr}]
    if config.vision_lr_scale:
        tower = [p for p in parameters if id(p) in vision]
        groups.append({"params": tower, "lr": config.lr * config.vision_lr_scale})
        language = language + tower
    parameters = language
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _lr(s, config.warmup_steps, config.steps)
    )
    symbols = config.symbol_words
    words = informative_words([d.thoughts for d in train_demos], config.common_words, symbols)
    summary["informative_words"] = sorted(words)
    encoded, encoded_eval = (
        [encode(loaded, d, config.fact_weight, words, config.prefill_answer, symbols) for d in part]
        for part in (train_demos, eval_demos)
    )
    bar = _progress(config)
    curve = []
    loaded.model.train()
    for step in range(1, config.steps + 1):
        rows = rng.sample(range(len(encoded)), min(config.batch_size, len(encoded)))
        forced = teacher_forced_log_probs(
            loaded,
            [train_demos[i].image for i in rows],
            [encoded[i].prompt_ids for i in rows],
            [encoded[i].answer_ids for i in rows],
            temperature=1.0,
        )
        weights = _pad([encoded[i].weights for i in rows], forced.log_probs.shape[1]).to(
            forced.log_probs.device
        )
        loss = -(forced.log_probs * weights).sum() / weights.sum()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if encoded_eval and (step % config.eval_every == 0 or step == config.steps):
            accuracy = fact_accuracy(loaded, eval_demos, encoded_eval)
            curve.append({"step": step, "loss": round(loss.item(), 4), "held_out_fact_accuracy": accuracy})
            log.info(
                "sft",
                extra={"step": step, "loss": round(loss.item(), 4), "fact_accuracy": round(accuracy, 3)},
            )
        if config.max_seconds and time.monotonic() - started > config.max_seconds:
            log.info("sft time budget reached", extra={"step": step})
            break
    if bar is not None:
        bar.close()
    loaded.model.eval()
    summary["curve"] = curve
    summary["seconds"] = round(time.monotonic() - started, 1)
    summary["output"] = str(save_result(loaded, config))
    (config.out / "sft_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


@torch.no_grad()
def fact_accuracy(loaded: Any, demos: Sequence[Demo], encoded: Sequence[Encoded]) -> float:
    """Share of image-dependent answer tokens the model predicts exactly (teacher-forced argmax)."""
    from visact.model.generation import teacher_forced_log_probs

    loaded.model.eval()
    hits = total = 0
    for start in range(0, len(demos), 16):
        chunk = list(range(start, min(start + 16, len(demos))))
        forced = teacher_forced_log_probs(
            loaded,
            [demos[i].image for i in chunk],
            [encoded[i].prompt_ids for i in chunk],
            [encoded[i].answer_ids for i in chunk],
            temperature=1.0,
        )
        # a token is predicted exactly when its log-prob is the maximum: approximate by p > 0.5
        for row, i in enumerate(chunk):
            for j, weighted in enumerate(encoded[i].weighted):
                if weighted:
                    total += 1
                    hits += int(forced.log_probs[row, j].item() > np.log(0.5))
    loaded.model.train()
    return hits / max(1, total)


def save_result(loaded: Any, config: SFTConfig) -> Path:
    config.out.mkdir(parents=True, exist_ok=True)
    if config.mode == "lora":
        from visact.model.adapters import save_adapter_file

        path, _ = save_adapter_file(loaded.model, config.out)
        return path
    target = config.out / "model"
    loaded.model.save_pretrained(target)
    loaded.processor.save_pretrained(target)
    return target


def _lr(step: int, warmup: int, total: int) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * progress))


def _pad(rows: Sequence[Sequence[float]], width: int) -> Tensor:
    out = torch.zeros(len(rows), width)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row)
    return out


def _progress(config: SFTConfig) -> Any:
    if not config.progress:
        return None
    from visact.progress import progress_bar

    return progress_bar(config.steps, "sft", "step")
