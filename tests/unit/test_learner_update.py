"""Learner.update on the tiny VLM: how many optimizer steps an update takes, the KL early stop,
activation checkpointing, and samples the model cannot score (dropped, counted, logged; the
update goes on).

Samples are real: answers the tiny model generated for NumberLine frames, one-step
episodes with rewards of both signs (so the advantages are not all zero).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from accelerate import Accelerator

from visact.model.loading import LoadedVLM, load_vlm
from visact.orchestration.sampled_episodes import answered_episodes
from visact.trainer import ppo
from visact.trainer.checkpoint import save_checkpoint
from visact.trainer.config import (
    LoraConfig,
    NetworkConfig,
    PPOConfig,
    RolloutConfig,
    TrainerConfig,
    VLMConfig,
)
from visact.trainer.learner import Learner, with_kl_penalty
from visact.wire.episodes import EpisodeData, PngImage

EPISODES = 8
TEMPERATURE = 1.0


def fresh_tiny() -> LoadedVLM:
    """A new copy each time: a Learner attaches its LoRA to the model it is given."""
    return load_vlm("tiny", dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def episodes(cache_dir: Path) -> list[EpisodeData]:
    return answered_episodes(fresh_tiny(), EPISODES, temperature=TEMPERATURE)


def update(episodes: list[EpisodeData], **overrides: float) -> dict[str, float]:
    config = TrainerConfig(
        lora=LoraConfig(r=8, alpha=16),
        ppo=PPOConfig(
            ppo_epochs=2,
            minibatch_size=2,
            micro_batch_size=2,
            lr=1e-3,
            max_grad_norm=1.0,
            **overrides,  # type: ignore[arg-type]
        ),
    )
    learner = Learner(config, fresh_tiny(), Accelerator(cpu=True))
    return learner.update(episodes)


def test_an_update_takes_every_minibatch_of_every_epoch_without_target_kl(
    episodes: list[EpisodeData],
) -> None:
    metrics = update(episodes)
    assert metrics["charts/optimizer_steps"] == 2 * EPISODES / 2  # epochs x minibatches
    assert metrics["charts/kl_stopped_early"] == 0.0
    assert "losses/stop_kl" not in metrics
    assert metrics["losses/approx_kl"] > 0.0  # the weights moved: later minibatches drift


def test_target_kl_ends_the_update_before_the_first_step_that_drifted_too_far(
    episodes: list[EpisodeData],
) -> None:
    metrics = update(episodes, target_kl=1e-7)
    # The first minibatch is scored by the weights it started from (KL ~0, within float noise):
    # it always steps; the second already sees moved weights.
    assert metrics["charts/optimizer_steps"] == 1
    assert metrics["charts/kl_stopped_early"] == 1.0
    assert metrics["losses/stop_kl"] > 1e-7
    assert metrics["losses/approx_kl"] < 1e-7  # the metrics are those of the steps taken


def test_the_first_step_is_taken_even_when_its_kl_reads_above_the_target(
    episodes: list[EpisodeData], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first minibatch's KL is 0 up to rounding; rounding (another batch layout, a GPU kernel)
    must not make an update that takes no step at all."""
    real_loss = ppo.ppo_loss

    def loss_reading_kl_one(**kwargs: Any) -> tuple[torch.Tensor, dict[str, float]]:
        loss, metrics = real_loss(**kwargs)
        return loss, {**metrics, "losses/approx_kl": 1.0}

    monkeypatch.setattr(ppo, "ppo_loss", loss_reading_kl_one)
    metrics = update(episodes, target_kl=0.5)
    assert metrics["charts/optimizer_steps"] == 1
    assert metrics["losses/stop_kl"] == pytest.approx(1.0)


def test_a_target_kl_never_reached_changes_nothing(episodes: list[EpisodeData]) -> None:
    metrics = update(episodes, target_kl=1e9)
    assert metrics["charts/optimizer_steps"] == 2 * EPISODES / 2
    assert metrics["charts/kl_stopped_early"] == 0.0


def test_a_negative_target_kl_is_refused_with_its_meaning() -> None:
    with pytest.raises(ValueError, match="--target-kl must be >= 0"):
        PPOConfig(target_kl=-0.01)


def test_gradient_checkpointing_recomputes_layers_and_updates_the_same_weights(
    episodes: list[EpisodeData], checkpoint_calls: list[int]
) -> None:
    learners = {}
    for checkpointing in (False, True):
        config = TrainerConfig(
            vlm=VLMConfig(gradient_checkpointing=checkpointing),
            lora=LoraConfig(r=8, alpha=16),
            ppo=PPOConfig(ppo_epochs=1, minibatch_size=4, micro_batch_size=2, lr=1e-3, max_grad_norm=1.0),
        )
        torch.manual_seed(0)  # the same LoRA initialization for both
        learners[checkpointing] = learner = Learner(config, fresh_tiny(), Accelerator(cpu=True))
        learner.metrics = learner.update(episodes)  # type: ignore[attr-defined]
    plain, checkpointed = learners[False], learners[True]

    assert checkpoint_calls[0] > 0  # layers were recomputed, in eval mode
    for key in ("losses/policy", "losses/value", "losses/approx_kl", "losses/grad_norm"):
        assert checkpointed.metrics[key] == pytest.approx(plain.metrics[key], rel=1e-4, abs=1e-7)  # type: ignore[attr-defined]
    for a, b in zip(plain.lora_parameters, checkpointed.lora_parameters, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_in_eval_mode_layers_are_checkpointed_only_under_the_learners_context(
    episodes: list[EpisodeData], checkpoint_calls: list[int]
) -> None:
    """transformers checkpoints only layers in training mode; the learner stays in eval mode (no
    dropout), so without ``checkpointing_in_eval_mode`` nothing would be recomputed. What the
    forward keeps for the backward (every tensor saved outside a checkpointed layer) shrinks."""
    from visact.model.generation import teacher_forced_log_probs
    from visact.model.loading import checkpointing_in_eval_mode

    config = TrainerConfig(vlm=VLMConfig(gradient_checkpointing=True), lora=LoraConfig(r=8, alpha=16))
    learner = Learner(config, fresh_tiny(), Accelerator(cpu=True))
    model = learner.loaded.model
    steps = [episode.steps[0] for episode in episodes[:4]]

    def bytes_kept_for_backward() -> int:
        kept = [0]

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            kept[0] += tensor.numel() * tensor.element_size()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            teacher_forced_log_probs(
                learner.loaded, [s.image.pixels() for s in steps], [s.prompt_ids for s in steps],
                [s.generated_ids for s in steps], 1.0,
            )  # fmt: skip
        return kept[0]

    kept_plain = bytes_kept_for_backward()
    assert checkpoint_calls[0] == 0
    with checkpointing_in_eval_mode(model):
        kept_checkpointed = bytes_kept_for_backward()
    assert checkpoint_calls[0] > 0
    assert kept_checkpointed < kept_plain / 3  # ~1/9 here (LoRA on the tiny VLM, 4 samples)
    assert not any(m.training for m in model.modules())  # every flag restored: dropout never came on


@pytest.mark.parametrize("advantage", ["grpo", "gigpo"])
def test_group_relative_updates_move_the_policy_and_leave_the_value_head(
    episodes: list[EpisodeData], advantage: str
) -> None:
    grouped = [dataclasses.replace(e, seed=i // 2) for i, e in enumerate(episodes)]  # 4 groups of 2
    config = TrainerConfig(
        lora=LoraConfig(r=8, alpha=16),
        ppo=PPOConfig(
            ppo_epochs=1, minibatch_size=8, micro_batch_size=4, lr=1e-3, max_grad_norm=1.0,
            advantage=advantage,  # type: ignore[arg-type]
        ),
        rollout=RolloutConfig(group_size=2),
    )  # fmt: skip
    learner = Learner(config, fresh_tiny(), Accelerator(cpu=True))
    value_head = [p.detach().clone() for p in learner.value_head.parameters()]
    lora = [p.detach().clone() for p in learner.lora_parameters]

    metrics = learner.update(grouped)

    assert metrics["charts/groups"] == 4 and metrics["charts/group_size_mean"] == 2
    assert "losses/value" not in metrics and "losses/policy" in metrics
    assert all(torch.equal(a, b) for a, b in zip(value_head, learner.value_head.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(lora, learner.lora_parameters, strict=True))


def test_grpo_without_groups_is_refused_with_what_to_give() -> None:
    with pytest.raises(ValueError, match="--group-size 2 or more"):
        TrainerConfig(ppo=PPOConfig(advantage="grpo"))


# ---------------------------------------------------------------------------------------------
# samples the model cannot score
# ---------------------------------------------------------------------------------------------

IMAGE_TOKEN = 3  # the tiny VLM's <image>


def broken(episode: EpisodeData, defect: str) -> EpisodeData:
    """``episode`` from agent "bad-agent" as episode "bad-episode", with ``defect``."""
    step = episode.steps[0]
    if defect == "prompt without its image tokens":
        step = dataclasses.replace(step, prompt_ids=[t for t in step.prompt_ids if t != IMAGE_TOKEN])
    elif defect == "answer ending in the image token":
        step = dataclasses.replace(
            step,
            generated_ids=[*step.generated_ids, IMAGE_TOKEN],
            behavior_log_probs=[*step.behavior_log_probs, -1.0],
        )
    else:  # "image bytes that do not decode"
        step = dataclasses.replace(
            step, image=PngImage(step.image.data[:40], step.image.height, step.image.width)
        )
    return dataclasses.replace(episode, steps=[step], agent_id="bad-agent", episode_id="bad-episode")


@pytest.mark.parametrize(
    "defect",
    ["prompt without its image tokens", "answer ending in the image token", "image bytes that do not decode"],
)
def test_a_sample_the_model_cannot_score_is_dropped_counted_logged_and_the_update_goes_on(
    episodes: list[EpisodeData], defect: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The first two once killed the trainer: "Image features and image tokens do not match"."""
    batch = [*episodes[:3], broken(episodes[3], defect), *episodes[4:]]  # its micro batch fails

    with caplog.at_level(logging.WARNING, logger="trainer.learner"):
        metrics = update(batch)

    assert metrics["counters/samples_dropped"] == 1 and metrics["counters/episodes_dropped"] == 1
    assert metrics["charts/episodes"] == EPISODES - 1  # the good ones of its micro batch stay
    assert metrics["charts/optimizer_steps"] == 2 * 4  # epochs x minibatches of 2 over 7 samples
    dropped = [r for r in caplog.records if r.getMessage().startswith("sample dropped")]
    assert len(dropped) == 1
    assert (dropped[0].agent, dropped[0].episode) == ("bad-agent", "bad-episode")  # type: ignore[attr-defined]
    assert "step 0:" in dropped[0].error  # type: ignore[attr-defined]


def test_an_episode_whose_bootstrap_cannot_be_scored_is_dropped(episodes: list[EpisodeData]) -> None:
    step = dataclasses.replace(episodes[0].steps[0], terminated=False, truncated=True)
    unbootstrappable = dataclasses.replace(
        episodes[0],
        steps=[step],
        bootstrap_image=step.image,
        bootstrap_prompt_ids=[t for t in step.prompt_ids if t != IMAGE_TOKEN],
    )

    metrics = update([unbootstrappable, *episodes[1:]])

    assert metrics["counters/samples_dropped"] == 1 and metrics["charts/episodes"] == EPISODES - 1


def test_a_batch_of_nothing_scorable_ends_its_update_with_the_weights_unchanged(
    episodes: list[EpisodeData],
) -> None:
    config = TrainerConfig(
        lora=LoraConfig(r=8, alpha=16), ppo=PPOConfig(ppo_epochs=1, minibatch_size=2, micro_batch_size=2)
    )
    learner = Learner(config, fresh_tiny(), Accelerator(cpu=True))
    lora = [p.detach().clone() for p in learner.lora_parameters]

    metrics = learner.update([broken(e, "prompt without its image tokens") for e in episodes[:2]])

    assert metrics["counters/samples_dropped"] == 2 and metrics["charts/optimizer_steps"] == 0
    assert learner.version == 1 and learner.updates == 1  # a version still follows (the trainer publishes it)
    assert all(torch.equal(a, b) for a, b in zip(lora, learner.lora_parameters, strict=True))


def test_a_checkpoint_records_the_runs_options_but_not_its_token(tmp_path: Path) -> None:
    config = TrainerConfig(network=NetworkConfig(token="s3cret-token"), lora=LoraConfig(r=8, alpha=16))
    learner = Learner(config, fresh_tiny(), Accelerator(cpu=True))
    saved = save_checkpoint(learner, tmp_path, {})
    written = json.loads((saved / "config.json").read_text())
    assert written["lora_r"] == 8 and written["token"] == "<set>"
    assert not any(b"s3cret-token" in path.read_bytes() for path in saved.rglob("*") if path.is_file())


def test_the_advantage_spread_before_normalization_is_logged(episodes: list[EpisodeData]) -> None:
    # rewards x 3: raw advantages spread ~3x the normalized ones
    tripled = [
        dataclasses.replace(e, steps=[dataclasses.replace(s, reward=3 * s.reward) for s in e.steps])
        for e in episodes
    ]
    normalized = update(tripled)
    raw = update(tripled, normalize_advantages=False)  # type: ignore[arg-type]
    assert raw["charts/advantage_std_raw"] == pytest.approx(raw["charts/advantage_std"], rel=1e-5)
    # the same batch and the same starting weights: the same raw spread either way
    assert normalized["charts/advantage_std_raw"] == pytest.approx(raw["charts/advantage_std_raw"], rel=1e-5)
    assert normalized["charts/advantage_std_raw"] > 2 * normalized["charts/advantage_std"]


def learner_with(**overrides: float) -> Learner:
    config = TrainerConfig(
        lora=LoraConfig(r=8, alpha=16),
        ppo=PPOConfig(
            ppo_epochs=2, minibatch_size=2, micro_batch_size=2, lr=1e-3, max_grad_norm=1.0, **overrides
        ),  # type: ignore[arg-type]
    )
    return Learner(config, fresh_tiny(), Accelerator(cpu=True))


def test_the_kl_penalty_measures_the_distance_from_the_weights_under_the_adapters(
    episodes: list[EpisodeData],
) -> None:
    samples = [s for e in episodes for s in e.steps]
    learner = learner_with(kl_coef=1.0)
    # a fresh adapter changes nothing (B = 0): the policy is its reference
    first = learner.update(episodes)
    assert first["charts/kl_to_reference"] == pytest.approx(0.0, abs=1e-5)
    # once the adapter has moved, the reference is still the model without it
    reference = learner.reference_log_probs(samples)
    base = learner_with().score(samples).action_log_prob
    torch.testing.assert_close(reference, base, rtol=1e-5, atol=1e-5)
    current = learner.score(samples).action_log_prob
    assert (current - reference).abs().max() > 1e-3
    second = learner.update(episodes)
    assert second["charts/kl_to_reference"] == pytest.approx(float((current - reference).mean()), abs=1e-5)
    assert "charts/kl_to_reference" not in learner_with().update(episodes)  # off by default


def test_the_kl_penalty_lowers_each_steps_reward_by_its_distance(episodes: list[EpisodeData]) -> None:
    steps = [s for e in episodes for s in e.steps]
    distances = torch.arange(len(steps), dtype=torch.float32) / 4 - 1  # of both signs
    distances[1] = float("nan")  # a step the reference could not score: no distance
    shaped = [s for e in with_kl_penalty(episodes, distances, 2.0) for s in e.steps]
    for row, (before, after) in enumerate(zip(steps, shaped, strict=True)):
        distance = 0.0 if row == 1 else float(distances[row])
        assert after.reward == pytest.approx(before.reward - 2.0 * distance)
        assert after.env_reward == before.env_reward  # the game's reward, as reported, stays
    assert [s.reward for e in episodes for s in e.steps] == [s.reward for s in steps]  # copies
    with pytest.raises(ValueError, match="one per step"):
        with_kl_penalty(episodes, distances[:-1], 2.0)
    with pytest.raises(ValueError, match="--kl-coef must be a finite number >= 0"):
        PPOConfig(kl_coef=-0.1)
