"""Checks of Describe: the spec is complete, consistent and stable."""

from __future__ import annotations

import math

from visact.env.v1 import env_pb2 as pb
from visact.env_server.conformance.context import PNG, RAW, Context
from visact.env_server.conformance.observe import encoding_name
from visact.env_server.conformance.wire import CheckFailed, CheckSkipped, CheckWarning

PROTOCOL_VERSION = "v1"
MESSAGE_SLACK = 16 * 1024  # per step, besides the image: task text, legal actions, info, framing
KNOWN_CAPABILITIES = ("batch_step", "batch_step_stream", "png", "seeded_reset", "expert", "reset_options")


def check_describe(ctx: Context) -> str:
    """protocol_version, name, image shape, encodings, vocabulary and limits are valid; Describe is stable."""
    spec = ctx.spec
    problems = _spec_problems(spec)
    again = ctx.wire.call("Describe", pb.DescribeRequest(), what="a second time").spec
    if again != spec:
        problems.append("a second Describe returned a different spec; expected the same one every time")
    if problems:
        raise CheckFailed("; ".join(problems))
    actions = (
        "dynamic actions" if spec.action_space.dynamic else f"{len(spec.action_space.vocabulary)} actions"
    )
    return (
        f"{spec.name!r} {spec.protocol_version}, images {spec.image_height}x{spec.image_width}x"
        f"{spec.image_channels}, {actions}, max_episode_steps {spec.max_episode_steps}, "
        f"max_sessions {spec.max_sessions}, idle timeout {spec.session_idle_timeout_seconds:g} s"
    )


def _spec_problems(spec: pb.EnvironmentSpec) -> list[str]:
    problems = []
    if spec.protocol_version != PROTOCOL_VERSION:
        problems.append(f"protocol_version is {spec.protocol_version!r}; expected {PROTOCOL_VERSION!r}")
    if not spec.name.strip():
        problems.append("name is empty; expected a short stable name")
    if spec.image_height <= 0 or spec.image_width <= 0:
        problems.append(
            f"image is {spec.image_height}x{spec.image_width}; expected a positive height and width"
        )
    if spec.image_channels != 3:
        problems.append(f"image_channels is {spec.image_channels}; expected 3 (RGB) in v1")
    encodings = list(spec.image_encodings)
    if RAW not in encodings:
        names = [encoding_name(e) for e in encodings]
        problems.append(f"image_encodings {names} lack IMAGE_ENCODING_RAW_RGB; every server must offer it")
    unknown = [e for e in encodings if e not in (RAW, PNG)]
    if unknown:
        problems.append(f"image_encodings holds unknown numbers {unknown}; v1 knows RAW_RGB (1) and PNG (2)")
    problems += _action_problems(spec.action_space)
    limits = {
        "max_episode_steps": spec.max_episode_steps,
        "max_sessions": spec.max_sessions,
        "max_message_bytes": spec.max_message_bytes,
    }
    problems += [f"{name} is {value}; expected 0 or more" for name, value in limits.items() if value < 0]
    idle = spec.session_idle_timeout_seconds
    if not math.isfinite(idle) or idle < 0:
        problems.append(f"session_idle_timeout_seconds is {idle}; expected a finite number, 0 or more")
    return problems


def _action_problems(space: pb.ActionSpace) -> list[str]:
    vocabulary = list(space.vocabulary)
    problems = []
    if not vocabulary and not space.dynamic:
        problems.append("action_space.vocabulary is empty and dynamic is false; expected the action strings")
    if any(not action for action in vocabulary):
        problems.append("action_space.vocabulary holds an empty string; expected non-empty action strings")
    if len(set(vocabulary)) != len(vocabulary):
        duplicates = sorted({a for a in vocabulary if vocabulary.count(a) > 1})
        problems.append(f"action_space.vocabulary repeats {duplicates}; expected each action once")
    return problems


def check_capabilities(ctx: Context) -> str:
    """Capabilities are v1 names, each once, and "png" matches image_encodings."""
    spec = ctx.spec
    capabilities = list(spec.capabilities)
    if ("png" in capabilities) != (PNG in spec.image_encodings):
        raise CheckFailed(
            f"capability 'png' is {'' if 'png' in capabilities else 'not '}declared but IMAGE_ENCODING_PNG is "
            f"{'' if PNG in spec.image_encodings else 'not '}in image_encodings; expected both or neither"
        )
    warnings = []
    unknown = [c for c in capabilities if c not in KNOWN_CAPABILITIES]
    if unknown:
        warnings.append(
            f"capabilities {unknown} are not v1 names {list(KNOWN_CAPABILITIES)}; clients ignore them"
        )
    if len(set(capabilities)) != len(capabilities):
        warnings.append(f"capabilities {capabilities} repeat a name")
    if ("reset_options" in capabilities) != bool(spec.reset_option_names):
        warnings.append(
            f"capability 'reset_options' is {'' if 'reset_options' in capabilities else 'not '}declared but "
            f"reset_option_names is {list(spec.reset_option_names)}; expected both or neither"
        )
    if warnings:
        raise CheckWarning("; ".join(warnings))
    return f"capabilities {capabilities}, reset options {list(spec.reset_option_names)}"


def check_message_size(ctx: Context) -> str:
    """max_message_bytes fits one observation, and a full BatchStep of max_batch_items steps."""
    spec = ctx.spec
    limit, items = spec.max_message_bytes, spec.max_batch_items
    image = spec.image_height * spec.image_width * spec.image_channels
    if limit == 0:
        raise CheckSkipped("max_message_bytes is 0 (not stated)")
    if image + MESSAGE_SLACK > limit:
        raise CheckFailed(
            f"max_message_bytes={limit} cannot hold one RAW_RGB observation of {image} bytes; expected room "
            "for every response"
        )
    fitting = limit // (image + MESSAGE_SLACK)
    if items == 0:
        raise CheckWarning(
            f"max_batch_items is 0 (no limit) but only about {fitting} RAW_RGB steps fit max_message_bytes={limit}; "
            f"the proto asks servers to size the limit so that a full BatchStep fits: declare max_batch_items"
        )
    needed = items * (image + MESSAGE_SLACK)
    if needed > limit:
        raise CheckFailed(
            f"a full BatchStep of max_batch_items={items} RAW_RGB steps needs about {needed} bytes but "
            f"max_message_bytes is {limit}; the proto asks servers to size it so that a full BatchStep fits: "
            f"raise the message limit to {needed} or lower max_batch_items to {fitting}"
        )
    return f"a full BatchStep of {items} RAW_RGB steps (about {needed} bytes) fits max_message_bytes={limit}"
