"""The project's tiny default VLM, built offline and deterministically.

A LLaVA (``LlavaForConditionalGeneration``: a CLIP vision tower, a 2-layer projector and a
Llama text model) small enough to sample and train on two CPU cores, with a byte-level BPE
tokenizer made in code: 256 byte tokens, a few specials, and merges learned by a tiny
deterministic BPE over a fixed in-code corpus of the games' prompt and answer phrases (no
file, no download, no training randomness: the same bytes on every machine). Digits never
merge, so every digit the model must read off an image is one token of its own.

``build_tiny_vlm(out_dir)`` writes the model, processor and tokenizer with
``save_pretrained``; ``ensure_tiny_vlm()`` builds it once into the cache (``$VISACT_CACHE``,
else ``$XDG_CACHE_HOME/visact``, else ``~/.cache/visact``) under a name derived from the recipe,
as a ``visact.cache`` entry: used only while every file matches the manifest written last,
rebuilt (with a warning in the log) otherwise, built by one process while the others wait. The
build runs in a child process (``python -m visact.model.tiny_vlm``): one with no torch.distributed
process group, where ``save_pretrained`` writes the weights. transformers writes checkpoint
files only on rank 0 once a process group is up (``should_save_on_this_rank``), so a build on
rank 1 of ``torchrun`` saved no weights (this built 5 of the 8 files; that entry broke every
later load on the machine until deleted by hand).

The sizes (``TinySpec``) were chosen with ``bench/tiny_vlm_probe.py`` on 2 CPU threads:
1.31 M parameters (vision 0.30 M, projector 0.03 M, text layers 0.85 M, embeddings and head
0.13 M); 64 px images in 16 px patches, so 16 image tokens. Sampling 60 tokens takes ~0.17 s
at batch 1, ~0.34 s at 8, ~0.44 s at 16; one forward+backward over 8 NumberLine prompts and
answers (166 + 45 tokens) ~0.14 s (LoRA r=8: ~0.15 s). It can learn to read: with a 200-step
vision warm-up (the tower and a throw-away linear head classify the digits) and the loss on
image-dependent answer tokens weighted x10, supervised training reads every training NumberLine
state after ~750 steps (~2 min); without the warm-up it stays at chance after 1000 steps, and
without the weight it is at ~40% after 1000. 96 px (36 image tokens) learned no faster.
The 256 merges cut a NumberLine prompt from ~495 to ~150 tokens and its answer from ~148 to ~42.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visact.cache import cache_root

#: Bump when the recipe changes in a way ``TinySpec`` does not capture (new corpus, new layout).
RECIPE_VERSION = 1

PAD_TOKEN = "<pad>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"  # end of a turn; the end-of-sequence token for generation
IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END, IMAGE_TOKEN)  # ids 0..3, then 256 bytes, then merges

#: ChatML-like. Content is a string or HF multimodal parts ({"type": "image"} / {"type": "text"}).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: Phrases of the games' prompts and answers (as visact/model/prompts.py and env_server/games word them
#: when this was written); the merges are learned from these, each line counted ``weight`` times.
#: Only compression depends on it: any text still tokenizes. Changing it changes the tokenizer:
#: bump RECIPE_VERSION and the pinned hash in tests/unit/test_models.py.
MERGE_CORPUS: tuple[tuple[str, int], ...] = (
    # answers
    ('{"current number": "x", "target number": "x", "thoughts": "x", "action": "+"}', 8),
    ('{"dealer card": "x", "player cards": "x", "player total": "x", "thoughts": "x", "action": "stand"}', 4),
    ('{"cards": "x", "formula": "x", "thoughts": "x", "action": "="}', 4),
    ('{"action": "hit"}', 2),
    ("The current number is less than the target, so I should increase it.", 4),
    ("The current number is greater than the target, so I should decrease it.", 4),
    ("The current number already equals the target.", 2),
    (
        "The dealer shows K and my cards make a hard total. Basic strategy says hit with a soft total "
        "against a dealer, so I stand.",
        3,
    ),
    (
        "The cards are Q, K and A. The formula is empty. The formula so far can no longer make it, so "
        "I end the game. The formula equals it and uses every card, so I check it. So I append it.",
        3,
    ),
    # prompts
    ("Reply with a valid JSON object in exactly this format:", 4),
    (
        '"thoughts": "{first read the facts off the image, then think about which action to choose}", '
        '"action": "-" or "+"',
        4,
    ),
    (
        "You are playing NumberLine. The image shows a target number and a current number, each between "
        "them. Your goal is to make the current number equal to the target number. The action adds one "
        "to the current number and subtracts one. Choose or.",
        2,
    ),
    (
        "You are playing Blackjack. The image shows the dealer's cards on top (one face up, one face "
        "down) and your cards below. Aces count or, J, Q and K count. Your goal is to beat the dealer by "
        "getting a total closer to without going over. The action 'hit' takes another card; 'stand' "
        "keeps your total and lets the dealer play. Choose 'stand' or 'hit'.",
        2,
    ),
    (
        "You are playing EZPoints. You are playing Points24. The image shows playing cards; J, Q and K "
        "count as and A counts as. Build a formula that uses each card's value exactly once and equals "
        "the target. Each action appends one token to the formula: a number from to or an operator. You "
        "may use '(' and ')'. The action '=' ends the game and checks the formula. The current formula "
        "is empty.",
        2,
    ),
    ("user assistant system", 1),
)


@dataclass(frozen=True)
class TinySpec:
    """Every size of the tiny VLM; its hash names the cache entry."""

    image_size: int = 64  # the 300x300 frames are resized to this (no crop)
    patch_size: int = 16  # (image_size / patch_size)^2 image tokens: 16
    vision_hidden: int = 96
    vision_layers: int = 2
    vision_heads: int = 4
    vision_intermediate: int = 384
    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 4
    text_kv_heads: int = 4
    text_intermediate: int = 384
    max_positions: int = 2048
    num_merges: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}"
            )
        for hidden, heads, what in (
            (self.vision_hidden, self.vision_heads, "vision"),
            (self.text_hidden, self.text_heads, "text"),
        ):
            if hidden % heads:
                raise ValueError(f"{what} hidden size {hidden} must be a multiple of its heads {heads}")
        if self.text_heads % self.text_kv_heads:
            raise ValueError(
                f"text_heads {self.text_heads} must be a multiple of text_kv_heads {self.text_kv_heads}"
            )

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


DEFAULT_SPEC = TinySpec()


@dataclass(frozen=True)
class TinyVariant:
    """A named recipe of the tiny VLM (``--model NAME``): its sizes and the corpus its tokenizer's
    merges are learned from. Each builds into a cache entry of its own."""

    name: str
    spec: TinySpec
    corpus: tuple[tuple[str, int], ...]


#: ``tiny-alfworld``: images of 128 px in 16 px patches, 1,024 merges over ALFWorld's phrases
ALFWORLD_SPEC = TinySpec(image_size=128, patch_size=16, num_merges=1024)


def tiny_variants() -> dict[str, TinyVariant]:
    """Every built-in tiny model by name: ``tiny`` (the default, the card games') and the opt-in
    ``tiny-alfworld`` (:mod:`visact.model.tiny_alfworld`: larger images, merges over ALFWorld's phrases)."""
    from visact.model.tiny_alfworld import alfworld_corpus

    return {
        "tiny": TinyVariant("tiny", DEFAULT_SPEC, MERGE_CORPUS),
        "tiny-alfworld": TinyVariant("tiny-alfworld", ALFWORLD_SPEC, alfworld_corpus()),
    }


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------


def byte_alphabet() -> list[str]:
    """GPT-2's printable stand-in for each byte 0..255 (what a ByteLevel pre-tokenizer emits)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def _pretokenize(text: str) -> list[str]:
    from tokenizers import pre_tokenizers

    splitter = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    return [piece for piece, _ in splitter.pre_tokenize_str(text)]


def learn_merges(corpus: Iterable[tuple[str, int]], num_merges: int) -> list[tuple[str, str]]:
    """BPE merges from ``(text, weight)`` lines: the most frequent adjacent pair first, ties broken
    by the pair's strings, pairs that occur once never merged, pieces holding a digit never merged.

    Pure Python and deterministic; pieces are the ByteLevel pre-tokenizer's, so a merge never
    crosses a word/punctuation boundary the tokenizer would not cross either.
    """
    counts: Counter[str] = Counter()
    for text, weight in corpus:
        for piece in _pretokenize(text):
            if not any(ch.isdigit() for ch in piece):
                counts[piece] += weight
    words = {piece: list(piece) for piece in sorted(counts)}
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for piece, symbols in words.items():
            for pair in itertools.pairwise(symbols):
                pairs[pair] += counts[piece]
        if not pairs:
            break
        best, count = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        if count < 2:
            break
        merges.append(best)
        joined = best[0] + best[1]
        for piece, symbols in words.items():
            i, out = 0, []
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            words[piece] = out
    return merges


def build_tokenizer(
    num_merges: int = DEFAULT_SPEC.num_merges,
    extra_special_tokens: Sequence[str] = (),
    chat_template: str = CHAT_TEMPLATE,
    named_tokens: Mapping[str, str] | None = None,
    corpus: Sequence[tuple[str, int]] = MERGE_CORPUS,
    max_length: int = DEFAULT_SPEC.max_positions,
) -> Any:
    """The tiny model's byte-level BPE tokenizer (a ``PreTrainedTokenizerFast``), padding on the left.

    Ids: the specials (``<pad>`` 0, ``<|im_start|>`` 1, ``<|im_end|>`` 2, ``<image>`` 3, then
    ``extra_special_tokens``), the 256 bytes in byte order, then one id per merge in merge order.
    Any Unicode text round-trips (every byte has a token). ``named_tokens`` gives special tokens
    the names processors look up (``{"image_token": "<|image_pad|>"}``: ``tokenizer.image_token``
    and ``tokenizer.image_token_id``); ``image_token`` is ``<image>`` unless named otherwise.
    The merges are learned from ``corpus`` (a variant's own, :data:`VARIANTS`).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = [*SPECIAL_TOKENS, *extra_special_tokens]
    if len(set(specials)) != len(specials):
        raise ValueError(f"duplicate special tokens in {specials}")
    vocab: dict[str, int] = {token: i for i, token in enumerate(specials)}
    for char in byte_alphabet():
        vocab[char] = len(vocab)
    merges = learn_merges(corpus, num_merges)
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        eos_token=IM_END,
        bos_token=None,
        unk_token=None,
        extra_special_tokens={"image_token": IMAGE_TOKEN, **(named_tokens or {})},
        padding_side="left",
        model_max_length=max_length,
    )
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [IM_START, IMAGE_TOKEN, *extra_special_tokens]}
    )
    tokenizer.chat_template = chat_template
    if [tokenizer.convert_tokens_to_ids(t) for t in specials] != list(range(len(specials))):
        raise RuntimeError("special token ids moved; the tokenizer layout is broken")
    return tokenizer


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


def tiny_llava_config(spec: TinySpec, vocab_size: int) -> Any:
    """The ``LlavaConfig`` of the tiny model (see the pitfalls in the module docstring of models.py)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(
        hidden_size=spec.vision_hidden,
        intermediate_size=spec.vision_intermediate,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.vision_heads,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        projection_dim=spec.vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=spec.text_hidden,
        intermediate_size=spec.text_intermediate,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_kv_heads,
        max_position_embeddings=spec.max_positions,
        pad_token_id=SPECIAL_TOKENS.index(PAD_TOKEN),
        eos_token_id=SPECIAL_TOKENS.index(IM_END),
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=SPECIAL_TOKENS.index(IMAGE_TOKEN),
        image_seq_length=spec.image_tokens,
        # The last layer: the default -2 is the first layer of a 2-layer tower.
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",  # drops CLS: the processor adds 1 then removes 1
        projector_hidden_act="gelu",
    )


def build_tiny_vlm(
    out_dir: str | os.PathLike[str],
    spec: TinySpec = DEFAULT_SPEC,
    corpus: Sequence[tuple[str, int]] = MERGE_CORPUS,
) -> Path:
    """Build the tiny VLM (seeded weights, local tokenizer whose merges come from ``corpus``) and
    ``save_pretrained`` it to ``out_dir``."""
    import torch
    from transformers import GenerationConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    out = Path(out_dir)
    tokenizer = build_tokenizer(spec.num_merges, corpus=corpus, max_length=spec.max_positions)
    config = tiny_llava_config(spec, vocab_size=len(tokenizer))
    # The generator is forked so that building never disturbs the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = LlavaForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        pad_token_id=config.text_config.pad_token_id,
        eos_token_id=config.text_config.eos_token_id,
    )
    # The PIL backend directly: without torchvision the default class only warns and falls back.
    image_processor = CLIPImageProcessorPil(
        size={"height": spec.image_size, "width": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size},
        do_center_crop=False,
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=spec.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS, which "default" then drops
        chat_template=CHAT_TEMPLATE,
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "visact_tiny.json").write_text(
        json.dumps(
            {"recipe": recipe_id(spec, corpus), "spec": dataclasses.asdict(spec)}, indent=2, sort_keys=True
        )
        + "\n"
    )
    unwritten = [name for name in BUILT_FILES if not (out / name).is_file()]
    if unwritten:
        raise RuntimeError(
            f"save_pretrained wrote no {', '.join(unwritten)} into {out}: under torch.distributed "
            "transformers saves only on rank 0; build in a process without a process group "
            "(ensure_tiny_vlm does)"
        )
    return out


# ---------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------

#: Every file of a complete build (``build_tiny_vlm`` checks it wrote them; an entry whose
#: manifest lacks one is rebuilt).
BUILT_FILES = (
    "chat_template.jinja",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "visact_tiny.json",
)


def recipe_id(spec: TinySpec = DEFAULT_SPEC, corpus: Sequence[tuple[str, int]] = MERGE_CORPUS) -> str:
    """A short hash of everything the build depends on (sizes, corpus, template, recipe version)."""
    import tokenizers
    import torch
    import transformers

    payload = {
        "version": RECIPE_VERSION,
        "spec": dataclasses.asdict(spec),
        "corpus": tuple(corpus),
        "template": CHAT_TEMPLATE,
        # Weight init may change between releases; a new release builds its own entry.
        "torch": _major_minor(torch.__version__),
        "transformers": _major_minor(transformers.__version__),
        "tokenizers": _major_minor(tokenizers.__version__),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def _major_minor(version: str) -> str:
    return ".".join(re.split(r"[.+]", version)[:2])


def ensure_tiny_vlm(
    spec: TinySpec = DEFAULT_SPEC, cache_dir: str | os.PathLike[str] | None = None, variant: str = "tiny"
) -> Path:
    """The tiny VLM's directory in the cache, checked against its manifest; built on first use (in a
    child process, by one process at a time) and rebuilt when not intact. ``variant`` names the
    merge corpus (:func:`tiny_variants`); ``ensure_variant`` takes a variant's own sizes too."""
    from visact.cache import ensure_entry

    root = Path(cache_dir) if cache_dir is not None else cache_root()
    corpus = MERGE_CORPUS if variant == "tiny" else tiny_variants()[variant].corpus
    return ensure_entry(
        root,
        f"{variant}-vlm-{recipe_id(spec, corpus)}",
        lambda staging: build_in_child(staging, spec, variant),
        what=f"the tiny VLM ({variant})",
        required=BUILT_FILES,
    )


def ensure_variant(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache entry of the built-in tiny model ``name`` (``tiny``, ``tiny-alfworld``)."""
    variants = tiny_variants()
    if name not in variants:
        raise ValueError(f"no tiny model named {name!r}; the built-in ones are {sorted(variants)}")
    return ensure_tiny_vlm(variants[name].spec, cache_dir, variant=name)


def build_in_child(out_dir: Path, spec: TinySpec = DEFAULT_SPEC, variant: str = "tiny") -> None:
    """``build_tiny_vlm`` in a fresh Python process (no process group, so every rank can build);
    the child dies with this process."""
    from visact.children import tied_to_this_process

    argv = [sys.executable, "-m", "visact.model.tiny_vlm", str(out_dir), json.dumps(dataclasses.asdict(spec))]
    if variant != "tiny":
        argv.append(variant)
    result = subprocess.run(tied_to_this_process(argv), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"building the tiny VLM in a child process failed (exit {result.returncode}); its output:\n"
            f"{(result.stdout + result.stderr)[-3000:]}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m visact.model.tiny_vlm OUT_DIR [SPEC_JSON [VARIANT]]``: build the tiny VLM into ``OUT_DIR``
    (with the merge corpus of ``VARIANT``, default ``tiny``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) not in (1, 2, 3):
        print("usage: python -m visact.model.tiny_vlm OUT_DIR [SPEC_JSON [VARIANT]]", file=sys.stderr)
        return 2
    spec = TinySpec(**json.loads(args[1])) if len(args) >= 2 else DEFAULT_SPEC
    corpus = tiny_variants()[args[2]].corpus if len(args) == 3 else MERGE_CORPUS
    build_tiny_vlm(args[0], spec, corpus)
    return 0


if __name__ == "__main__":
    sys.exit(main())
