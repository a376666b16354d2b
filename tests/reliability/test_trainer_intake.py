"""What a real `trainer serve` process accepts, and the memory it holds for what it accepted.

One trainer (the tiny VLM, on port 0) with a 16 MiB buffer and updates too large to ever run,
so that nothing leaves the buffer. Episodes are built from the tiny VLM's real prompt
(``tests.reliability.protocol_agent``) and sent over the real protocol.

- Memory: images that are legal but large, and the budget full of incompressible ones, grow the
  process by at most its byte budget plus a constant (once, 16 steps of 4096x4096 white PNGs
  of 57 KiB each were accepted, decoded, and grew the trainer by ~930 MiB).
- Acceptance: a prompt without its image tokens, an answer ending in the image token (both
  once accepted, then killing the learner), and log-probs above 0 beyond float rounding
  (once accepted up to 1e-3) are refused with INVALID_ARGUMENT naming the problem.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from tests.processes import Process
from tests.reliability.cluster import start_trainer
from tests.reliability.protocol_agent import ProtocolAgent, tiny_template
from visact.env.v1 import env_pb2
from visact.trainer.v1 import trainer_pb2 as pb

pytestmark = pytest.mark.slow

BUFFER_MB = 16
#: what the trainer may grow beyond its buffer's budget: what requests cost while they are read
#: and checked (each up to the message limit; 6 MiB here), the pixels of the images being checked
#: (two at a time), and what the allocator keeps of them per thread (measured: 60-100 MiB)
CONSTANT_MB = 128
IMAGE_TOKEN = 3  # the tiny VLM's <image>


@dataclass
class Running:
    process: Process
    agent: ProtocolAgent

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.popen.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def submit(self, episode: pb.Episode, episode_id: str) -> tuple[grpc.StatusCode, str]:
        """(code, the response's status name or the error's details)."""
        request = pb.SubmitEpisodeRequest(
            agent_id=self.agent.agent_id, episode=episode, episode_id=episode_id
        )
        try:
            response = self.agent.stub.SubmitEpisode(request, timeout=60)
        except grpc.RpcError as exc:
            return exc.code(), str(exc.details())
        return grpc.StatusCode.OK, pb.SubmitEpisodeResponse.Status.Name(response.status)


@pytest.fixture(scope="module")
def trainer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    workdir = tmp_path_factory.mktemp("admission")
    process = start_trainer(
        workdir, workdir / "run", "trainer", 0, "--buffer-mb", str(BUFFER_MB), "--steps-per-update", "100000"
    )  # no update ever runs: what is accepted stays in the buffer
    agent = ProtocolAgent(process.address, steps_per_episode=1)
    try:
        agent.register()
        yield Running(process, agent)
    finally:
        agent.close()
        assert process.stop(timeout=60) == 0, process.text()[-3000:]


def png(pixels: np.ndarray) -> env_pb2.Image:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    height, width = pixels.shape[:2]
    return env_pb2.Image(
        data=buffer.getvalue(), encoding=env_pb2.IMAGE_ENCODING_PNG, height=height, width=width, channels=3
    )


def episode_of(agent: ProtocolAgent, images: list[env_pb2.Image]) -> pb.Episode:
    """A valid episode of the tiny VLM's prompt, one step per image (its prompt holds the 16 image
    tokens the tiny processor makes of any image: it resizes every image to 64x64)."""
    agent.steps_per_episode = len(images)
    episode = agent.episode()
    for step, image in zip(episode.steps, images, strict=True):
        step.image.CopyFrom(image)
    return episode


def test_large_images_grow_the_trainer_by_no_more_than_its_buffer_budget(trainer: Running) -> None:
    agent = trainer.agent
    assert trainer.submit(agent.episode(), "warm-up") == (grpc.StatusCode.OK, "ACCEPTED")
    before = trainer.rss_mb()
    bound = BUFFER_MB + CONSTANT_MB
    codes: dict[str, list[tuple[grpc.StatusCode, str]]] = {}
    rss_after: dict[str, int] = {}

    def send(kind: str, episode: pb.Episode, count: int) -> None:
        for n in range(count):
            codes.setdefault(kind, []).append(trainer.submit(episode, f"{kind}-{n}"))
            grown = trainer.rss_mb() - before
            assert grown < bound, (
                f"the trainer grew {grown:.0f} MiB (bound: --buffer-mb {BUFFER_MB} + {CONSTANT_MB}) after "
                f"{n + 1} {kind} episodes: {codes}"
            )
        rss_after[kind] = round(trainer.rss_mb())

    white = np.full((4096, 4096, 3), 255, np.uint8)
    # the request: 16 steps, each a legal 4096x4096 white PNG of 57 KiB (918 KiB in all)
    send("4096x4096 white", episode_of(agent, [png(white)] * 16), 4)
    # the largest this trainer takes (1024x1024 for the tiny VLM): 5 KiB files of 3 MiB of pixels
    send("1024x1024 white", episode_of(agent, [png(white[:1024, :1024])] * 16), 40)
    # incompressible ones, 3 MiB a file: the budget fills, and the trainer says wait
    noise = np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    send("1024x1024 noise", episode_of(agent, [png(noise)] * 2), 8)
    print(f"\ntrainer RSS {before:.0f} MiB at first, then after each kind of episode: {rss_after}")

    refused = codes["4096x4096 white"]
    assert {code for code, _ in refused} == {grpc.StatusCode.INVALID_ARGUMENT}
    assert "image declared 4096x4096; need positive sizes and at most 1048576 pixels" in refused[0][1]
    assert set(codes["1024x1024 white"]) == {(grpc.StatusCode.OK, "ACCEPTED")}
    assert (grpc.StatusCode.OK, "WAIT") in codes["1024x1024 noise"]  # the byte budget, not the steps


def _without_image_tokens(step: pb.TrajectoryStep) -> None:
    kept = [t for t in step.prompt_ids if t != IMAGE_TOKEN]
    step.ClearField("prompt_ids")
    step.prompt_ids.extend(kept)  # every id still in the vocabulary


def _ending_in_the_image_token(step: pb.TrajectoryStep) -> None:
    step.generated_ids.append(IMAGE_TOKEN)
    step.log_probs.append(-1.0)


def _positive_log_prob(step: pb.TrajectoryStep) -> None:
    step.log_probs[0] = 5e-4  # within the old slack of 1e-3


@pytest.mark.parametrize(
    ("defect", "expected"),
    [
        (
            _without_image_tokens,
            "step 0 prompt: the model's processor expands its 32x32 image into 16 image tokens",
        ),
        (_ending_in_the_image_token, "step 0 answer: token 3 ('<image>') at position 4 is a special token"),
        (_positive_log_prob, "step 0: log-probs must be finite and <= 0, got e.g. 0.0005"),
    ],
    ids=["prompt without its image tokens", "answer ending in the image token", "log-prob 5e-4"],
)
def test_an_episode_the_learner_cannot_take_is_refused_naming_the_problem(
    trainer: Running, defect: object, expected: str
) -> None:
    episode = episode_of(trainer.agent, [tiny_template().image])
    assert trainer.submit(episode, f"sound-{defect}") == (grpc.StatusCode.OK, "ACCEPTED")
    defect(episode.steps[0])  # type: ignore[operator]

    code, details = trainer.submit(episode, f"defective-{defect}")

    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert expected in details
    assert trainer.process.alive()
