"""A BatchStepResponse's wire bytes with its raw frames spliced in, copied once.

Putting a raw frame into a message costs three copies of its bytes before gRPC sees them
(``ndarray.tobytes``, the assignment into the message, ``SerializeToString``); 16 frames of
300x300 make a 4.3 MB response, and those copies were most of what a batched raw step cost the
server. Here every message is serialized without its frame, and the frames (read-only views of
the arrays the games rendered) are joined in at the end of their ``Image``, under length prefixes
computed from their sizes: one copy, in ``bytes.join``.

The bytes parse as the same message (a field may come in any order on the wire; protobuf
parsers take each field where it stands). ``tests/unit/test_wire_bytes.py`` checks that they
parse to exactly the message the in-process ``batch_step`` returns.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from visact.env.v1 import env_pb2 as pb

_LENGTH_DELIMITED = 2


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _header(number: int, length: int) -> bytes:
    """The tag and length of a length-delimited field ``number`` of ``length`` bytes."""
    return _varint(number << 3 | _LENGTH_DELIMITED) + _varint(length)


def _number(message: type, name: str) -> int:
    return int(message.DESCRIPTOR.fields_by_name[name].number)  # type: ignore[attr-defined]


RESULTS = _number(pb.BatchStepResponse, "results")
OBSERVATION = _number(pb.StepResponse, "observation")
IMAGE = _number(pb.Observation, "image")
DATA = _number(pb.Image, "data")
assert _number(pb.ResetResponse, "observation") == OBSERVATION


def batch_response_bytes(response: pb.BatchStepResponse, frames: Sequence[tuple[int, np.ndarray]]) -> bytes:
    """The wire form of ``response`` with ``frames`` (result index, (H, W, C) uint8 array) as the
    ``data`` of those results' observation images, which ``response`` holds empty. A result that
    ended in an error has no image: its frame is left out. ``response`` is taken apart on the way
    (its observations are cleared): serialize it once, then drop it."""
    by_index = dict(frames)
    parts: list[bytes | memoryview] = []
    for index, result in enumerate(response.results):
        kind = result.WhichOneof("result")
        frame = by_index.get(index)
        if frame is None or kind not in ("reset", "step"):
            encoded = result.SerializeToString()
            parts += [_header(RESULTS, len(encoded)), encoded]
            continue
        data = np.ascontiguousarray(frame, dtype=np.uint8).data.cast("B")
        inner = getattr(result, kind)
        observation = inner.observation
        # innermost first: each layer is its fields without the child, then the child at the end
        image = observation.image.SerializeToString()  # shape and encoding; its data is empty
        image_length = len(image) + len(_header(DATA, data.nbytes)) + data.nbytes
        observation.ClearField("image")
        observation_head = observation.SerializeToString()
        observation_length = len(observation_head) + len(_header(IMAGE, image_length)) + image_length
        inner.ClearField("observation")
        inner_head = inner.SerializeToString()
        inner_length = len(inner_head) + len(_header(OBSERVATION, observation_length)) + observation_length
        kind_number = _number(pb.BatchResult, kind)
        result_length = len(_header(kind_number, inner_length)) + inner_length
        parts += [
            _header(RESULTS, result_length),
            _header(kind_number, inner_length),
            inner_head,
            _header(OBSERVATION, observation_length),
            observation_head,
            _header(IMAGE, image_length),
            image,
            _header(DATA, data.nbytes),
            data,
        ]
    return b"".join(parts)
