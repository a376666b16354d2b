"""The BatchStep's wire bytes (raw frames spliced in, copied once) parse to exactly the message
the in-process ``batch_step`` builds: for raw and PNG sessions, resets, steps and errors mixed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from visact import images
from visact.env.v1 import env_pb2 as pb
from visact.env_server import games
from visact.env_server.core import Env, StepOutcome
from visact.env_server.service import EnvironmentServicer
from visact.env_server.wire_bytes import _varint, batch_response_bytes


def twin_servicers(game: str) -> tuple[EnvironmentServicer, EnvironmentServicer]:
    return EnvironmentServicer(lambda: games.make(game)), EnvironmentServicer(lambda: games.make(game))


def sessions(servicer: EnvironmentServicer, encodings: list[int]) -> list[str]:
    return [
        servicer.create_session(pb.CreateSessionRequest(image_encoding=encoding)).session_id
        for encoding in encodings
    ]


@pytest.mark.parametrize("game", ["numberline", "blackjack", "points24"])
def test_the_wire_bytes_parse_to_the_message_batch_step_returns(game: str) -> None:
    as_bytes, as_message = twin_servicers(game)
    encodings = [images.RAW, images.PNG, images.RAW, images.RAW]
    twins = [sessions(as_bytes, encodings), sessions(as_message, encodings)]

    def batches(sids: list[str]) -> list[pb.BatchStepRequest]:
        resets = [pb.BatchItem(reset=pb.ResetRequest(session_id=s, seed=i)) for i, s in enumerate(sids)]
        first = games.make(game)
        first.reset(seed=0)
        action = first.legal_actions()[0]  # legal in every game here at its first step
        steps = [pb.BatchItem(step=pb.StepRequest(session_id=s, action=action)) for s in sids]
        broken = [
            pb.BatchItem(step=pb.StepRequest(session_id="no-such-session", action="x")),
            pb.BatchItem(step=pb.StepRequest(session_id=sids[0], action="not an action")),
        ]
        return [pb.BatchStepRequest(items=resets), pb.BatchStepRequest(items=[*steps, *broken, *resets])]

    for left, right in zip(batches(twins[0]), batches(twins[1]), strict=True):
        wire = as_bytes.batch_step_bytes(left)
        want = as_message.batch_step(right)
        got = pb.BatchStepResponse.FromString(wire)
        assert len(wire) == got.ByteSize()  # no field twice, nothing but the message
        for results in (got.results, want.results):  # error texts name the twins' session ids
            for result in results:
                if result.WhichOneof("result") == "error":
                    result.error.message = ""
        assert got == want
        raw = [
            getattr(r, r.WhichOneof("result")).observation.image
            for r in got.results
            if r.WhichOneof("result") != "error"
        ]
        assert any(
            image.encoding == images.RAW and len(image.data) == image.height * image.width * 3
            for image in raw
        )


class Scribbler(Env):
    """Renders into one writeable buffer it changes in place on every step."""

    name = "scribbler"
    action_vocabulary = ("go",)
    image_shape = (2, 3, 3)

    def __init__(self) -> None:
        self.canvas = np.zeros(self.image_shape, dtype=np.uint8)

    def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> None:
        self.canvas[:] = 0

    def step(self, action: str) -> StepOutcome:
        self.canvas += 1
        return StepOutcome(reward=0.0, terminated=False)

    def render(self) -> np.ndarray:
        return self.canvas

    def task_text(self) -> str:
        return "scribble"


def test_a_frame_the_game_changes_later_in_the_batch_is_sent_as_it_was() -> None:
    servicer = EnvironmentServicer(Scribbler)
    (sid,) = sessions(servicer, [images.RAW])
    step = pb.BatchItem(step=pb.StepRequest(session_id=sid, action="go"))
    request = pb.BatchStepRequest(
        items=[pb.BatchItem(reset=pb.ResetRequest(session_id=sid, seed=1)), step, step]
    )
    got = pb.BatchStepResponse.FromString(servicer.batch_step_bytes(request))
    values = [
        images.decode(getattr(r, r.WhichOneof("result")).observation.image)[0, 0, 0] for r in got.results
    ]
    assert values == [0, 1, 2]


def test_varints_and_an_empty_batch() -> None:
    assert [_varint(n) for n in (0, 1, 127, 128, 300, 2**21)] == [
        b"\x00",
        b"\x01",
        b"\x7f",
        b"\x80\x01",
        b"\xac\x02",
        b"\x80\x80\x80\x01",
    ]
    assert batch_response_bytes(pb.BatchStepResponse(), []) == b""
