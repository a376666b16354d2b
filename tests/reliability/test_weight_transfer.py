"""A broken or corrupted weight transfer: the agent's real TrainerLink against an in-process trainer
that serves bad bytes first. The hash check refuses them, the agent keeps the version it had
(tensor for tensor), fetches again with backoff, and applies only a whole, checked adapter,
only between rollout rounds. A payload that is a pickle is refused without being unpickled.
"""

from __future__ import annotations

import json
import logging
import pickle
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as save_safetensors_bytes

from tests.reliability.fake_trainer import (
    FakeTrainer,
    broken_stream,
    cut_short,
    flipped,
    good,
    lora_state,
)
from visact.agent.config import AgentConfig, AgentRunConfig, PolicyConfig, ServersConfig
from visact.agent.policy import VLMPolicy
from visact.agent.trainer_link import TrainerLink
from visact.model.adapters import CONFIG_KEY, read_adapter
from visact.model.loading import load_vlm


class _Trap:
    """Unpickling this creates a file: proof that something unpickled network bytes."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.marker),))  # type: ignore[return-value]


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def version_tensors(trainer: FakeTrainer, version: int) -> dict[str, torch.Tensor]:
    return read_adapter(trainer.adapter(version))[0]


@pytest.fixture
def trainer(tmp_path: Path) -> Iterator[FakeTrainer]:
    fake = FakeTrainer(tmp_path / "weights")
    yield fake
    fake.close()


@pytest.fixture
def link(trainer: FakeTrainer) -> Iterator[TrainerLink]:
    policy = VLMPolicy(load_vlm("tiny", device="cpu"))
    config = AgentConfig(
        ServersConfig(server=["unused:1"], trainer=trainer.address, sessions=1),
        PolicyConfig(model="tiny"),
        run=AgentRunConfig(name="agent"),
    )
    stop = threading.Event()
    link = TrainerLink(config, policy, ["numberline"], stop)
    yield link
    link.close()


def running_version_1(trainer: FakeTrainer, link: TrainerLink) -> dict:
    """Publish version 1, start the link and wait until it runs it; returns its LoRA tensors."""
    trainer.publish(1)
    link.start()
    link.wait_for_first_weights(timeout=60)
    assert link.policy.version == 1
    return lora_state(link.policy.loaded)


def test_corrupted_or_broken_transfers_are_refused_and_the_agent_keeps_its_version(
    trainer: FakeTrainer, link: TrainerLink, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.trainer_link")
    policy = link.policy
    running = running_version_1(trainer, link)
    assert same(running, version_tensors(trainer, 1))

    # version 2: flipped byte, cut short, a stream that breaks, and only then the real bytes,
    # which the trainer holds back until the test has looked at the agent
    release = threading.Event()

    def held_good(data: bytes) -> tuple[list[bytes], bool]:
        release.wait(30)
        return good(data)

    trainer.servicer.fetch_modes[2] = [flipped, cut_short, broken_stream, held_good]
    trainer.publish(2)
    wait_for(lambda: trainer.servicer.fetches.get(2, 0) >= 4, 30, "four fetches of version 2")
    link.between_rounds()  # a round boundary while only bad transfers have come: nothing to apply
    assert policy.version == 1
    assert same(lora_state(policy.loaded), running), "a refused transfer changed the weights"
    refused = [r for r in caplog.records if r.getMessage() == "weights refused"]
    failed = [r for r in caplog.records if r.getMessage() == "weights fetch failed"]
    assert len(refused) == 2 and "sha256" in refused[0].error, [r.__dict__ for r in refused]  # type: ignore[attr-defined]
    assert len(failed) == 1 and failed[0].error == "UNAVAILABLE"  # type: ignore[attr-defined]

    release.set()
    wait_for(lambda: link._pending is not None, 30, "the good transfer of version 2")
    # checked and pending, but applied only at the next round boundary, all at once
    time.sleep(0.2)
    assert policy.version == 1 and same(lora_state(policy.loaded), running)
    link.between_rounds()
    assert policy.version == 2
    assert same(lora_state(policy.loaded), version_tensors(trainer, 2))
    assert link.latest_version == 2


def test_a_pickle_payload_with_a_matching_hash_is_refused_without_being_unpickled(
    trainer: FakeTrainer, link: TrainerLink, tmp_path: Path
) -> None:
    policy = link.policy
    before = running_version_1(trainer, link)

    marker = tmp_path / "unpickled"
    trainer.publish(2, pickle.dumps(_Trap(marker)))  # announced with the payload's own sha256
    wait_for(lambda: trainer.servicer.fetches.get(2, 0) >= 2, 30, "version 2 fetched and refused twice")
    link.between_rounds()
    assert not marker.exists(), "network bytes were unpickled"
    assert policy.version == 1 and same(lora_state(policy.loaded), before)

    trainer.publish(3)  # the next good version replaces it
    wait_for(lambda: link._pending is not None, 30, "version 3")
    link.between_rounds()
    assert policy.version == 3 and same(lora_state(policy.loaded), version_tensors(trainer, 3))
    assert not marker.exists()


def test_an_adapter_that_does_not_fit_is_refused_whole_and_the_next_one_applies(
    trainer: FakeTrainer, link: TrainerLink
) -> None:
    policy = link.policy
    before = running_version_1(trainer, link)

    # a real safetensors adapter with the right hash, but one tensor of another shape
    tensors = version_tensors(trainer, 2)
    name = sorted(tensors)[-1]
    tensors[name] = torch.zeros(tensors[name].shape[0] + 1, *tensors[name].shape[1:])
    trainer.publish(2, save_safetensors_bytes(tensors, metadata={CONFIG_KEY: json.dumps(trainer.lora)}))
    wait_for(lambda: link._pending is not None, 30, "version 2 fetched")
    link.between_rounds()
    assert policy.version == 1
    assert same(lora_state(policy.loaded), before), "an unfit adapter was partly applied"

    trainer.publish(3)
    wait_for(lambda: link._pending is not None, 30, "version 3")
    link.between_rounds()
    assert policy.version == 3 and same(lora_state(policy.loaded), version_tensors(trainer, 3))


def test_an_agent_held_up_by_a_full_trainer_still_takes_new_weights(
    trainer: FakeTrainer, link: TrainerLink
) -> None:
    """While a finished episode waits for room in the outbox (the trainer answers WAIT, e.g. at
    --max-updates), no generation runs: the agent applies pending weights meanwhile, so that it
    can reach the version the trainer waits for (else both wait for each other)."""
    from visact.wire.records import Episode

    tensors, lora = read_adapter(trainer.adapter(5))
    link._pending = (5, tensors, lora)  # fetched and checked by the watcher
    while not link._outbox.full():  # nothing sends: the trainer is full
        link._outbox.put(("queued", None))  # type: ignore[arg-type]
    waiting = threading.Thread(target=link.submit, args=(Episode("numberline", "s", 0, []),), daemon=True)
    waiting.start()
    wait_for(lambda: link.policy.version == 5, 10, "the pending weights applied while submit waits")
    assert waiting.is_alive()  # still waiting for room: nothing was dropped
    assert same(lora_state(link.policy.loaded), version_tensors(trainer, 5))
    link.stop.set()
    waiting.join(timeout=5)
