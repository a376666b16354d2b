"""One of two learner processes that must drop the same samples (run by
tests/e2e/test_accelerate_launch.py):

    torchrun --nproc_per_node 2 -m tests.e2e.drop_together OUT_DIR

The main process shares a batch of six answered NumberLine episodes, as `trainer serve` does
(``visact.trainer.distributed.share_batch``): one has a prompt without its image tokens (no process can
score it), and the second process cuts its own copy of another's image short (only it fails on
that one). Each process updates on the batch and writes what it did to OUT_DIR/rank-N.json.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from visact.logs import setup_logging
from visact.model.loading import load_vlm
from visact.orchestration.sampled_episodes import answered_episodes
from visact.trainer.config import LoraConfig, PPOConfig, RunConfig, TrainerConfig
from visact.trainer.distributed import share_batch
from visact.trainer.serve import build_learner
from visact.wire.episodes import PngImage

IMAGE_TOKEN = 3  # the tiny VLM's <image>


def main() -> int:
    out = Path(sys.argv[1])
    setup_logging("text")  # as `trainer serve` logs
    config = TrainerConfig(
        lora=LoraConfig(r=4, alpha=8),
        ppo=PPOConfig(ppo_epochs=1, minibatch_size=2, micro_batch_size=2, lr=1e-3, max_grad_norm=1.0),
        run=RunConfig(threads=1, checkpoint_dir=out / "run"),
    )
    learner, _ = build_learner(config)
    accelerator = learner.accelerator
    if accelerator.is_main_process:
        episodes = answered_episodes(load_vlm("tiny", dtype="float32", device="cpu"), 6)
        step = episodes[1].steps[0]
        prompt = [t for t in step.prompt_ids if t != IMAGE_TOKEN]
        episodes[1] = dataclasses.replace(episodes[1], steps=[dataclasses.replace(step, prompt_ids=prompt)])
        batch = share_batch(accelerator, episodes)
    else:
        batch = share_batch(
            accelerator, None, latest_version=0, vocab_size=learner.vocab_size, max_tokens=learner.max_tokens
        )
        assert batch is not None
        step = batch[4].steps[0]
        cut = PngImage(step.image.data[:40], step.image.height, step.image.width)
        batch[4] = dataclasses.replace(batch[4], steps=[dataclasses.replace(step, image=cut)])
    assert batch is not None and len(batch) == 6
    metrics = learner.update(batch)
    weights = sum(float(p.detach().double().sum()) for p in learner.lora_parameters)
    accelerator.wait_for_everyone()
    result = {
        "rank": accelerator.process_index,
        "processes": accelerator.num_processes,
        "metrics": metrics,
        "lora_sum": weights,
        "episode_ids": [e.episode_id for e in batch],
    }
    (out / f"rank-{accelerator.process_index}.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
