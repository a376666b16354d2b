"""The prompt for one observation, and the answer the model should give, in RL4VLM's JSON format.

The model sees an image and this text and answers with one JSON object: first the facts it
reads off the image (the environment's ``fact_keys``, e.g. ``"current number"``), then
``"thoughts"``, then ``"action"`` (RL4VLM method step 1). ``cot=False`` is the paper's
action-only ablation: the object holds the ``"action"`` key alone.

- :func:`build_messages` gives the chat messages in the Hugging Face multimodal format; the
  model's own chat template (``processor.apply_chat_template``) turns them into text, so no
  template lives here.
- :func:`format_target` gives the exact answer string the model should produce (SFT
  demonstrations, tests); ``visact.agent.parsing.parse_action`` parses every such string back.
- :func:`answer_prefill` is the opening every such answer shares (``{"action":``, or the first
  fact's key); ``build_messages(..., prefill=True)`` writes it as the start of the assistant's
  turn, so the model writes only what follows it (``--prefill-answer``).

Pure: no torch, no transformers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "ACTION_KEY",
    "THOUGHTS_KEY",
    "answer_format",
    "answer_keys",
    "answer_prefill",
    "build_messages",
    "check_legal_actions",
    "format_target",
    "instruction_text",
    "key_name",
    "prefill_message",
]

#: The key of the chosen action; always the last key of the answer.
ACTION_KEY = "action"
#: The key of the free-text reasoning, between the facts and the action.
THOUGHTS_KEY = "thoughts"

_FACT_PLACEHOLDER = "x"
_THOUGHTS_AFTER_FACTS = "{first read the facts off the image, then think about which action to choose}"
_THOUGHTS_ALONE = "{think about which action to choose}"


def key_name(key: str) -> str:
    """How answer keys are compared: stripped of spaces and markdown marks (``*``, ``_``, backticks), casefolded.

    The parser recognises the action key as any key whose ``key_name`` is ``"action"``
    (``"Action"``, ``**action**``...), so fact keys must not collide with it under this name.
    """
    return key.strip().strip("*_` \t").casefold()


def check_legal_actions(legal_actions: Sequence[str]) -> tuple[str, ...]:
    """``legal_actions`` as a tuple, or ValueError if empty, not strings, blank, or repeated."""
    if isinstance(legal_actions, str):
        raise ValueError(f"legal_actions must be a sequence of strings, got the string {legal_actions!r}")
    legal = tuple(legal_actions)
    if not legal:
        raise ValueError("legal_actions is empty: the environment must offer at least one action")
    for action in legal:
        if not isinstance(action, str) or not action.strip():
            raise ValueError(
                f"every legal action must be a non-blank string, got {action!r} in {list(legal)}"
            )
    if len(set(legal)) != len(legal):
        repeated = sorted({a for a in legal if legal.count(a) > 1})
        raise ValueError(f"legal actions must be distinct; repeated: {repeated}")
    return legal


def _check_fact_keys(fact_keys: Iterable[str]) -> tuple[str, ...]:
    """``fact_keys`` as a tuple, or ValueError if blank, repeated, or colliding with thoughts/action."""
    keys = tuple(fact_keys)
    seen: dict[str, str] = {}
    for key in keys:
        if not isinstance(key, str) or not key_name(key):
            raise ValueError(f"every fact key must be a non-blank string, got {key!r} in {list(keys)}")
        name = key_name(key)
        if name in (ACTION_KEY, THOUGHTS_KEY):
            raise ValueError(f"fact key {key!r} collides with the reserved key {name!r}; rename it")
        if name in seen:
            raise ValueError(f"fact keys {seen[name]!r} and {key!r} are the same key; make them distinct")
        seen[name] = key
    return keys


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def answer_keys(fact_keys: Sequence[str], cot: bool = True) -> tuple[str, ...]:
    """The answer object's keys in order: the facts, ``"thoughts"``, ``"action"`` (or ``"action"`` alone)."""
    if not cot:
        return (ACTION_KEY,)
    return (*_check_fact_keys(fact_keys), THOUGHTS_KEY, ACTION_KEY)


def answer_prefill(first_key: str) -> str:
    """The fixed opening of an answer whose first key is ``first_key``: ``{"action":``.

    It stops before the space that starts the value, where byte-level BPE tokenizers split anyway,
    so a prompt that ends with it is tokenized as the full answer is (``{"``, ``action``, ``":``)
    and what the model writes after it (`` "="}``) is the full answer's own tokens.
    """
    return "{" + _quote(first_key) + ":"


def answer_format(legal_actions: Sequence[str], fact_keys: Sequence[str] = (), cot: bool = True) -> str:
    """The answer template shown to the model, one line.

    ``{"current number": "x", "target number": "x", "thoughts": "{first read the facts off the
    image, then think about which action to choose}", "action": "-" or "+"}``: every legal
    action is listed, JSON-quoted, joined by ``or``.
    """
    legal = check_legal_actions(legal_actions)
    parts: list[str] = []
    if cot:
        facts = _check_fact_keys(fact_keys)
        parts += [f"{_quote(key)}: {_quote(_FACT_PLACEHOLDER)}" for key in facts]
        thoughts = _THOUGHTS_AFTER_FACTS if facts else _THOUGHTS_ALONE
        parts.append(f"{_quote(THOUGHTS_KEY)}: {_quote(thoughts)}")
    parts.append(f"{_quote(ACTION_KEY)}: " + " or ".join(_quote(action) for action in legal))
    return "{" + ", ".join(parts) + "}"


def instruction_text(
    task: str, legal_actions: Sequence[str], fact_keys: Sequence[str] = (), cot: bool = True
) -> str:
    """The prompt's text: the task first, then the answer format (see :func:`answer_format`)."""
    if not isinstance(task, str):
        raise ValueError(f"task must be the environment's task text (a string), got {type(task).__name__}")
    lines = [task.strip()] if task.strip() else []
    lines.append("Reply with a valid JSON object in exactly this format:")
    lines.append(answer_format(legal_actions, fact_keys, cot))
    return "\n".join(lines)


def build_messages(
    task: str,
    legal_actions: Sequence[str],
    fact_keys: Sequence[str] = (),
    cot: bool = True,
    prefill: bool = False,
) -> list[dict[str, Any]]:
    """The chat messages for one observation: one user turn holding the image, then the text.

    ``[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": ...}]}]``,
    for the model's ``processor.apply_chat_template(messages, add_generation_prompt=True)``;
    the image itself goes to the processor alongside. ``prefill=True`` adds the assistant's turn
    begun with :func:`answer_prefill` of the answer's first key (``visact.model.generation``
    renders it with ``continue_final_message``): the model continues the answer from there.
    """
    text = instruction_text(task, legal_actions, fact_keys, cot)
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}
    ]
    if prefill:
        messages.append(prefill_message(answer_prefill(answer_keys(fact_keys, cot)[0])))
    return messages


def prefill_message(prefill: str) -> dict[str, Any]:
    """The assistant's turn begun with ``prefill``, the last of a prompt's messages."""
    return {"role": "assistant", "content": [{"type": "text", "text": prefill}]}


def format_target(
    facts: Mapping[str, str] | Iterable[tuple[str, str]], thoughts: str, action: str, cot: bool = True
) -> str:
    """The exact answer the model should produce: ``{facts..., "thoughts": ..., "action": ...}``.

    Keys in the prompt's order (facts in the order given: pass them in the environment's
    ``fact_keys`` order, as ``ExpertMove.facts`` is), one line, ``json.dumps`` with
    ``ensure_ascii=False`` and its default ``", "``/``": "`` separators, like the template in
    the prompt. With ``cot=False`` it is ``{"action": ...}`` and ``facts``/``thoughts`` are unused.
    """
    if not cot:
        return json.dumps({ACTION_KEY: action}, ensure_ascii=False)
    pairs = list(facts.items()) if isinstance(facts, Mapping) else list(facts)
    _check_fact_keys(key for key, _ in pairs)
    answer: dict[str, str] = dict(pairs)
    answer[THOUGHTS_KEY] = thoughts
    answer[ACTION_KEY] = action
    return json.dumps(answer, ensure_ascii=False)
