"""Batched sampling with exact per-token log-probs, and the same log-probs recomputed by the learner.

Sampling (``generate_batch``) runs ``model.generate`` for its model-specific plumbing (KV
cache, positions, when to feed the pixels) but draws every token itself: a logits processor
turns the raw logits into the sampling distribution with ``sampling_log_probs`` (special tokens
masked, then temperature, then top-p), samples from it, records the fp32 log-prob of the draw,
and forces ``generate``'s greedy step to take that token. So the recorded log-probs are those
of the distribution actually sampled from, with no sampling default of a checkpoint in between,
and ``teacher_forced_log_probs`` recomputes them with the very same function from one forward
pass over a left-padded batch (``tests/unit/test_models.py`` checks they agree within 1e-4).

Special tokens are masked by default: a random policy otherwise samples e.g. ``<image>``, and
the learner's forward then fails with "Image features and image tokens do not match". The
stop tokens stay allowed, and a stop token that ends an answer is one of its generated tokens.

Samples carry token ids, never text to re-tokenize. ``Sample.token_spans`` maps the decoded
text back to tokens: span ``i`` is the characters that became complete when token ``i`` was
appended (decode of the first ``i + 1`` tokens minus decode of the first ``i``). It is exact
for byte-level tokens: a character whose UTF-8 bytes are split over several tokens belongs to
the token holding its last byte, earlier ones get an empty span, as do stop tokens.
"""

from __future__ import annotations

import bisect
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from transformers import LogitsProcessor

from visact.model.loading import LoadedVLM, base_model_of

__all__ = [
    "ImageLike",
    "Prompt",
    "Sample",
    "TeacherForced",
    "chat_messages",
    "generate_batch",
    "image_inputs",
    "image_token_ids",
    "prompt_token_ids",
    "render_prompt",
    "sampling_log_probs",
    "suppressed_token_ids",
    "teacher_forced_log_probs",
    "token_char_spans",
]

ImageLike = Image.Image | np.ndarray
#: the user's text (one turn, the image first) or HF multimodal chat messages
Prompt = str | Sequence[Mapping[str, Any]]


@dataclass
class Sample:
    """One sampled answer: tokens, their sampling log-probs, and the text they decode to."""

    prompt_ids: list[int]  # the prompt as the model saw it (template applied, image tokens expanded)
    generated_ids: list[int]  # sampled tokens, the stop token included when one ended the answer
    log_probs: list[float]  # fp32 log-prob of each generated token under the sampling distribution
    text: str  # decode of generated_ids, special tokens skipped
    token_spans: list[tuple[int, int]]  # [start, end) chars of ``text`` completed by each token
    finished: bool  # ended on a stop token (False: cut at max_new_tokens)
    version: int = 0  # the weights version that answered (set by the engine, visact.model.engines)

    def token_at(self, char_index: int) -> int:
        """Index of the generated token that completes character ``char_index`` of ``text``."""
        if not 0 <= char_index < len(self.text):
            raise IndexError(f"char_index {char_index} outside the text's 0..{len(self.text) - 1}")
        ends = [end for _, end in self.token_spans]
        return bisect.bisect_right(ends, char_index)


@dataclass
class TeacherForced:
    """Log-probs of given answers, recomputed; token ``j`` of answer ``i`` sits at ``[i, j]``."""

    log_probs: Tensor  # (B, G) fp32, 0 where ``mask`` is False; differentiable if grad is enabled
    mask: Tensor  # (B, G) bool, True on real tokens
    last_prompt_hidden: Tensor | None  # (B, H) last layer's hidden state at the last prompt token


# ---------------------------------------------------------------------------------------------
# Prompts and model inputs
# ---------------------------------------------------------------------------------------------


def chat_messages(prompt: Prompt) -> list[dict[str, Any]]:
    """HF multimodal chat messages; a plain string becomes one user turn: the image, then the text."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    return [dict(message) for message in prompt]


def render_prompt(loaded: LoadedVLM, prompt: Prompt) -> str:
    """The prompt as text, through the processor's chat template with the generation prompt added.

    Messages that end with the assistant's turn (an answer begun for the model, the prompt's
    ``prefill``) are rendered with ``continue_final_message``: the text stops where that turn's
    text does, with no end-of-turn, and the model continues it. Families without a chat template
    (PaliGemma) get the parts concatenated: the processor's image token for an image part, the
    text of a text part (their processor expands and frames them)."""
    messages = chat_messages(prompt)
    if _uses_chat_template(loaded):
        if messages and messages[-1].get("role") == "assistant":
            rendered = loaded.processor.apply_chat_template(
                messages, continue_final_message=True, tokenize=False
            )
        else:
            rendered = loaded.processor.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
        return str(rendered)
    if messages and messages[-1].get("role") == "assistant":
        raise ValueError(
            f"{loaded.name_or_path} has no chat template, so an answer cannot be begun for it (its "
            "processor ends every prompt with its own separator); leave --prefill-answer off"
        )
    image_token = str(getattr(loaded.processor, "image_token", "<image>"))
    parts = []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            parts.append(content)
            continue
        for part in content:
            parts.append(image_token if part.get("type") == "image" else str(part.get("text", "")))
    return "".join(parts)


def _uses_chat_template(loaded: LoadedVLM) -> bool:
    return loaded.traits.chat_template and bool(getattr(loaded.processor, "chat_template", None))


def _images_argument(loaded: LoadedVLM, images: Sequence[ImageLike]) -> list[Any]:
    return [[image] for image in images] if loaded.traits.nested_images else list(images)


def _forward_parameters(loaded: LoadedVLM) -> set[str]:
    return set(inspect.signature(base_model_of(loaded.model).forward).parameters)


def image_inputs(loaded: LoadedVLM, images: Sequence[ImageLike]) -> dict[str, Tensor]:
    """The image processor's tensors for one image per prompt, as the model's forward takes them.

    Made by the same processor call as sampling's (:func:`_encode`, with an empty text), so the
    recompute sees the very pixels the sample was drawn from: calling the image processor alone
    would miss the settings the processor passes it (InternVL's processor tiles each frame into
    crops, its image processor alone does not).
    """
    return _model_image_tensors(loaded, _encode(loaded, images, [""] * len(images)))


def _model_image_tensors(loaded: LoadedVLM, processed: Mapping[str, Any]) -> dict[str, Tensor]:
    """The image processor's outputs among ``processed`` that the model's forward takes, on its device."""
    accepted = _forward_parameters(loaded)
    image_keys = set(getattr(loaded.processor.image_processor, "model_input_names", ["pixel_values"]))
    tensors: dict[str, Tensor] = {}
    for key, value in processed.items():
        if key not in accepted or key not in image_keys or not isinstance(value, Tensor):
            continue
        if value.is_floating_point():
            value = value.to(loaded.dtype)
        tensors[key] = value.to(loaded.device)
    return tensors


def _encode(loaded: LoadedVLM, images: Sequence[ImageLike], prompts: Sequence[Prompt]) -> Any:
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images for {len(prompts)} prompts; give one image per prompt")
    if not prompts:
        raise ValueError("no prompts given")
    texts = [render_prompt(loaded, prompt) for prompt in prompts]
    return loaded.processor(
        images=_images_argument(loaded, images),
        text=texts,
        return_tensors="pt",
        padding=True,
        # A chat template writes its own BOS; the tokenizer adding one would double it.
        add_special_tokens=not _uses_chat_template(loaded),
    )


def prompt_token_ids(
    loaded: LoadedVLM, images: Sequence[ImageLike], prompts: Sequence[Prompt]
) -> list[list[int]]:
    """Each prompt's token ids as the model sees them (no padding), e.g. for a value bootstrap."""
    encoded = _encode(loaded, images, prompts)
    return _unpadded(encoded["input_ids"], encoded["attention_mask"])


def _unpadded(input_ids: Tensor, attention_mask: Tensor) -> list[list[int]]:
    return [ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask, strict=True)]


def _token_extras(loaded: LoadedVLM, input_ids: Tensor, answer_mask: Tensor | None) -> dict[str, Tensor]:
    """Per-token inputs some families need, rebuilt from the ids the same way in both paths."""
    extras: dict[str, Tensor] = {}
    traits = loaded.traits
    if traits.mm_token_type_ids or traits.image_token_type_ids:
        on_image = torch.isin(input_ids, torch.tensor(image_token_ids(loaded), device=input_ids.device))
        if traits.mm_token_type_ids:
            extras["mm_token_type_ids"] = on_image.to(torch.int32)
        if traits.image_token_type_ids:
            extras["token_type_ids"] = on_image.to(torch.long)
    if traits.prefix_token_type_ids:
        answer = answer_mask if answer_mask is not None else torch.zeros_like(input_ids, dtype=torch.bool)
        extras["token_type_ids"] = answer.to(torch.long)
    return extras


def image_token_ids(loaded: LoadedVLM) -> list[int]:
    """The ids the processor expands an image into (what its own ``mm_token_type_ids`` marks):
    Gemma 3's soft image tokens, not its begin-of-image token that ``image_token_id`` names.
    The model matches their count against its image features (the trainer checks it on arrival)."""
    processor = loaded.processor
    ids = getattr(processor, "image_token_ids", None) or [processor.image_token_id]
    return [int(i) for i in ids if i is not None]


# ---------------------------------------------------------------------------------------------
# The sampling distribution
# ---------------------------------------------------------------------------------------------


def suppressed_token_ids(loaded: LoadedVLM, vocab_size: int) -> Tensor:
    """Ids never sampled when special tokens are suppressed: every special or added-special token
    (the image token included) except the stop tokens, and logit rows the tokenizer cannot decode."""
    tokenizer = loaded.tokenizer
    banned = set(int(i) for i in tokenizer.all_special_ids)
    for token_id, added in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(added, "special", False):
            banned.add(int(token_id))
    image_token_id = getattr(loaded.processor, "image_token_id", None)
    if image_token_id is not None:
        banned.add(int(image_token_id))
    banned.update(range(len(tokenizer), vocab_size))
    banned.difference_update(loaded.stop_ids)
    return torch.tensor(sorted(i for i in banned if 0 <= i < vocab_size), dtype=torch.long)


def sampling_log_probs(
    logits: Tensor, temperature: float, top_p: float = 1.0, suppressed: Tensor | None = None
) -> Tensor:
    """Log-probs (fp32, last dim) of the distribution sampled from: suppressed ids masked, then
    logits / temperature (temperature <= 0, greedy decoding, reports temperature 1), then top-p."""
    scores = logits.float()
    if suppressed is not None and suppressed.numel():
        scores = scores.index_fill(-1, suppressed.to(scores.device), float("-inf"))
    if temperature > 0:
        scores = scores / temperature
    log_probs = torch.log_softmax(scores, dim=-1)
    if top_p < 1.0:
        sorted_lp, order = log_probs.sort(dim=-1, descending=True)
        probs = sorted_lp.exp()
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p  # mass before this token already covers top_p
        drop_sorted[..., 0] = False
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        log_probs = torch.log_softmax(scores.masked_fill(drop, float("-inf")), dim=-1)
    return log_probs


class _SampleAndRecord(LogitsProcessor):
    """A logits processor that samples each next token itself and records its log-prob.

    It returns scores that are -inf except at its draw, so ``generate``'s greedy step takes it.
    """

    def __init__(
        self,
        temperature: float,
        top_p: float,
        suppress: bool,
        loaded: LoadedVLM,
        generator: torch.Generator | None,
    ) -> None:
        self.temperature = temperature
        self.top_p = top_p
        self.suppress = suppress
        self.loaded = loaded
        self.generator = generator
        self.suppressed: Tensor | None = None  # computed at the first step, once the vocab size is known
        self.tokens: list[Tensor] = []
        self.log_probs: list[Tensor] = []

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        if self.suppress and self.suppressed is None:
            self.suppressed = suppressed_token_ids(self.loaded, scores.shape[-1]).to(scores.device)
        log_probs = sampling_log_probs(scores, self.temperature, self.top_p, self.suppressed)
        if self.temperature > 0:
            choice = torch.multinomial(log_probs.exp(), 1, generator=self.generator).squeeze(1)
        else:
            choice = log_probs.argmax(dim=-1)
        self.tokens.append(choice)
        # log_softmax is <= 0 up to rounding; what is recorded never exceeds 0, the trainer's rule
        self.log_probs.append(log_probs.gather(1, choice[:, None]).squeeze(1).clamp(max=0.0))
        forced = torch.full_like(scores, float("-inf"))
        return forced.scatter(1, choice[:, None], 0.0)


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def generate_batch(
    loaded: LoadedVLM,
    images: Sequence[ImageLike],
    prompts: Sequence[Prompt],
    max_new_tokens: int,
    temperature: float,
    top_p: float = 1.0,
    suppress_special_tokens: bool = True,
    generator: torch.Generator | None = None,
) -> list[Sample]:
    """Sample one answer per (image, prompt), batched, with the log-prob of every sampled token.

    ``temperature <= 0`` decodes greedily (log-probs then at temperature 1). ``generator`` (on the
    model's device) makes the draws reproducible without touching the global RNG. The model samples
    in eval mode (dropout off; its mode is restored after), so a learner that recomputes the
    log-probs in eval mode gets the same numbers.
    """
    from transformers import GenerationConfig, LogitsProcessorList

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    encoded = _encode(loaded, images, prompts)
    input_ids = encoded["input_ids"].to(loaded.device)
    attention_mask = encoded["attention_mask"].to(loaded.device)
    sampler = _SampleAndRecord(temperature, top_p, suppress_special_tokens, loaded, generator)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,  # the sampler draws; generate only takes its choice
        num_beams=1,
        pad_token_id=loaded.tokenizer.pad_token_id,
        eos_token_id=list(loaded.stop_ids),
    )
    was_training = loaded.model.training
    loaded.model.eval()  # no dropout while sampling: the learner must be able to reproduce the draw
    try:
        output = loaded.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            **_model_image_tensors(loaded, encoded),  # processed once, by the processor call above
            **_token_extras(loaded, input_ids, None),
            generation_config=config,
            logits_processor=LogitsProcessorList([sampler]),
        )
    finally:
        loaded.model.train(was_training)
    new_tokens = output[:, input_ids.shape[1] :].cpu()
    drawn = torch.stack(sampler.tokens, dim=1).cpu()
    drawn_log_probs = torch.stack(sampler.log_probs, dim=1).float().cpu()
    prompts_ids = _unpadded(input_ids.cpu(), attention_mask.cpu())
    stop_ids = set(loaded.stop_ids)

    samples = []
    for row, prompt_ids in enumerate(prompts_ids):
        tokens = drawn[row].tolist()
        length = next((i + 1 for i, token in enumerate(tokens) if token in stop_ids), len(tokens))
        if new_tokens[row, :length].tolist() != tokens[:length]:
            raise RuntimeError(
                "generate() did not keep the sampled tokens; a logits processor of the model's "
                "generation_config changed them (load models with load_vlm, which neutralizes it)"
            )
        generated = tokens[:length]
        text, spans = token_char_spans(loaded.tokenizer, generated)
        samples.append(
            Sample(
                prompt_ids=prompt_ids,
                generated_ids=generated,
                log_probs=drawn_log_probs[row, :length].tolist(),
                text=text,
                token_spans=spans,
                finished=length > 0 and generated[-1] in stop_ids,
            )
        )
    return samples


def token_char_spans(tokenizer: Any, token_ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """The decoded text (special tokens skipped) and, per token, the [start, end) characters that
    became complete when it was appended (see the module docstring). O(n^2) decoding, ~ms per answer."""

    def decode(ids: Sequence[int]) -> str:
        return str(tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False))

    text = decode(token_ids)
    spans: list[tuple[int, int]] = []
    stable = ""
    for k in range(1, len(token_ids) + 1):
        partial = text if k == len(token_ids) else decode(token_ids[:k])
        if k < len(token_ids) and partial.endswith("\ufffd"):
            spans.append((len(stable), len(stable)))  # an incomplete UTF-8 sequence: wait for the rest
            continue
        start = len(stable)
        if not partial.startswith(stable):  # a decoder that rewrites earlier text: keep spans monotone
            start = min(start, len(partial))
        spans.append((start, max(start, len(partial))))
        stable = partial
    return text, spans


# ---------------------------------------------------------------------------------------------
# Teacher forcing
# ---------------------------------------------------------------------------------------------


def teacher_forced_log_probs(
    loaded: LoadedVLM,
    images: Sequence[ImageLike],
    prompt_ids: Sequence[Sequence[int]],
    generated_ids: Sequence[Sequence[int]],
    temperature: float,
    *,
    top_p: float = 1.0,
    suppress_special_tokens: bool = True,
    return_hidden: bool = False,
) -> TeacherForced:
    """Log-probs of ``generated_ids`` after ``prompt_ids``, from one forward pass on the batch
    left-padded as a whole (prompt + answer), under the distribution ``generate_batch`` samples
    from with the same ``temperature``, ``top_p`` and ``suppress_special_tokens``.

    Runs with gradients if the caller has them enabled (the learner); wrap in ``torch.no_grad()``
    otherwise. Only the answer positions go through the output head (``logits_to_keep``).
    """
    if not len(images) == len(prompt_ids) == len(generated_ids):
        raise ValueError(
            f"{len(images)} images, {len(prompt_ids)} prompts and {len(generated_ids)} answers; they must pair up"
        )
    if not images:
        raise ValueError("empty batch")
    pad_id = int(loaded.tokenizer.pad_token_id)
    batch = len(images)
    answer_lengths = [len(g) for g in generated_ids]
    longest_answer = max(answer_lengths)
    if longest_answer == 0:
        raise ValueError("every answer is empty; there is nothing to score")
    sequences = [list(p) + list(g) for p, g in zip(prompt_ids, generated_ids, strict=True)]
    total = max(len(s) for s in sequences)
    input_ids = torch.full((batch, total), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((batch, total), dtype=torch.long)
    answer_mask = torch.zeros((batch, total), dtype=torch.bool)
    for row, sequence in enumerate(sequences):
        input_ids[row, total - len(sequence) :] = torch.tensor(sequence, dtype=torch.long)
        attention_mask[row, total - len(sequence) :] = 1
        answer_mask[row, total - answer_lengths[row] :] = True
    input_ids = input_ids.to(loaded.device)
    attention_mask = attention_mask.to(loaded.device)

    inputs: dict[str, Any] = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        **image_inputs(loaded, images),
        **_token_extras(loaded, input_ids, answer_mask.to(loaded.device)),
    }
    accepted = _forward_parameters(loaded)
    if "position_ids" in accepted:
        inputs["position_ids"] = _positions_as_generate(loaded, input_ids, inputs)
    if "logits_to_keep" in accepted:
        inputs["logits_to_keep"] = longest_answer + 1
    output = loaded.model(**inputs, output_hidden_states=return_hidden, use_cache=False)
    logits = output.logits[:, -(longest_answer + 1) : -1]  # position t predicts token t + 1

    # Answers end together at the right edge: answer i fills the last len(answer i) columns.
    targets = input_ids[:, total - longest_answer :]
    right_mask = answer_mask[:, total - longest_answer :].to(loaded.device)
    suppressed = suppressed_token_ids(loaded, logits.shape[-1]) if suppress_special_tokens else None
    log_probs = sampling_log_probs(logits, temperature, top_p, suppressed)
    picked = log_probs.gather(-1, targets[..., None]).squeeze(-1).masked_fill(~right_mask, 0.0)

    # Re-align to the left: token j of answer i at [i, j].
    columns = torch.arange(longest_answer, device=picked.device)
    lengths = torch.tensor(answer_lengths, device=picked.device)
    source = (columns[None, :] + (longest_answer - lengths)[:, None]).clamp(max=longest_answer - 1)
    mask = columns[None, :] < lengths[:, None]
    aligned = picked.gather(1, source).masked_fill(~mask, 0.0)

    hidden = None
    if return_hidden:
        last_prompt = total - lengths - 1
        hidden = output.hidden_states[-1][torch.arange(batch, device=picked.device), last_prompt]
    return TeacherForced(log_probs=aligned, mask=mask, last_prompt_hidden=hidden)


def _positions_as_generate(loaded: LoadedVLM, input_ids: Tensor, inputs: dict[str, Any]) -> Tensor:
    """Position ids exactly as ``generate`` builds them for this model (left padding skipped;
    multimodal RoPE for Qwen2-VL-like models), via transformers' own helper when it exists."""
    base = base_model_of(loaded.model)
    prepare = getattr(base, "_prepare_position_ids_for_generation", None)
    if callable(prepare):
        return prepare(input_ids, dict(inputs))
    mask = inputs["attention_mask"]
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
