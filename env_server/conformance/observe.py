"""Reading observations off the wire and judging them against the spec; comparing two of them."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image as PILImage

from visact.env.v1 import env_pb2 as pb
from visact.env_server.conformance.wire import CheckFailed

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def encoding_name(encoding: int) -> str:
    try:
        return pb.ImageEncoding.Name(encoding)
    except ValueError:
        return f"unknown encoding {encoding}"


def image_pixels(
    image: pb.Image, spec: pb.EnvironmentSpec, encoding: pb.ImageEncoding, where: str
) -> np.ndarray:
    """The image as an (H, W, 3) uint8 array; CheckFailed when it does not match the spec."""
    h, w, c = spec.image_height, spec.image_width, spec.image_channels
    if image.encoding != encoding:
        raise CheckFailed(
            f"{where}: image.encoding is {encoding_name(image.encoding)}; expected {encoding_name(encoding)}, "
            "the encoding the session was created with"
        )
    declared = (image.height, image.width, image.channels)
    if declared != (h, w, c):
        raise CheckFailed(
            f"{where}: image declares height, width, channels = {declared}; expected {(h, w, c)} as Describe says"
        )
    if encoding == pb.IMAGE_ENCODING_RAW_RGB:
        if len(image.data) != h * w * c:
            raise CheckFailed(
                f"{where}: RAW_RGB image carries {len(image.data)} bytes; expected {h}*{w}*{c} = {h * w * c}"
            )
        return np.frombuffer(image.data, dtype=np.uint8).reshape(h, w, c)
    if not image.data.startswith(PNG_SIGNATURE):
        raise CheckFailed(f"{where}: PNG image data does not start with the PNG signature")
    try:
        with PILImage.open(io.BytesIO(image.data)) as pil:
            pixels = np.asarray(pil.convert("RGB"))
    except Exception as exc:  # PIL raises many types for bad bytes
        raise CheckFailed(f"{where}: PNG image does not decode: {exc}") from exc
    if pixels.shape != (h, w, 3):
        raise CheckFailed(f"{where}: PNG image decodes to {pixels.shape}; expected {(h, w, 3)}")
    return pixels


def check_observation(
    observation: pb.Observation,
    spec: pb.EnvironmentSpec,
    where: str,
    *,
    encoding: pb.ImageEncoding = pb.IMAGE_ENCODING_RAW_RGB,
    episode_over: bool = False,
) -> np.ndarray:
    """Judge one observation; returns its pixels. Legal actions may be empty only once the episode is over."""
    pixels = image_pixels(observation.image, spec, encoding, where)
    legal = list(observation.legal_actions)
    if not legal and not episode_over:
        raise CheckFailed(f"{where}: legal_actions is empty while the episode runs; expected at least one")
    if not spec.action_space.dynamic:
        outside = [a for a in legal if a not in set(spec.action_space.vocabulary)]
        if outside:
            raise CheckFailed(
                f"{where}: legal_actions {outside} are not in the vocabulary {list(spec.action_space.vocabulary)} "
                "and the action space is not dynamic"
            )
    return pixels


def observation_difference(a: pb.Observation, b: pb.Observation) -> str | None:
    """How two observations differ (image, task, legal actions), or None when they are the same."""
    if a.image.data != b.image.data or a.image.encoding != b.image.encoding:
        return f"images differ ({_bytes_difference(a.image.data, b.image.data)})"
    if a.task != b.task:
        return f"task texts differ: {_short(a.task)} vs {_short(b.task)}"
    if list(a.legal_actions) != list(b.legal_actions):
        return f"legal_actions differ: {list(a.legal_actions)} vs {list(b.legal_actions)}"
    return None


def step_difference(a: pb.StepResponse, b: pb.StepResponse) -> str | None:
    """How two step responses differ (observation, reward, flags, episode_step), or None."""
    for name in ("reward", "terminated", "truncated", "episode_step"):
        if getattr(a, name) != getattr(b, name):
            return f"{name} differs: {getattr(a, name)!r} vs {getattr(b, name)!r}"
    return observation_difference(a.observation, b.observation)


def reset_difference(a: pb.ResetResponse, b: pb.ResetResponse) -> str | None:
    """How two reset responses differ (observation, seed), or None."""
    if a.seed != b.seed:
        return f"seed differs: {a.seed} vs {b.seed}"
    return observation_difference(a.observation, b.observation)


def _bytes_difference(a: bytes, b: bytes) -> str:
    if len(a) != len(b):
        return f"{len(a)} vs {len(b)} bytes"
    differing = int(np.count_nonzero(np.frombuffer(a, np.uint8) != np.frombuffer(b, np.uint8)))
    return f"{differing} of {len(a)} bytes differ"


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
