"""Several learner processes (`accelerate launch trainer serve ...`): the main process serves the
agents and gathers each batch; every process takes part in the update.

Batches travel from the main process to the others as the episodes' protobuf bytes
(``visact.wire.episodes.episode_message``) in a uint8 tensor (``accelerate.utils.broadcast``), never as pickles; each process decodes and checks them
exactly as the service did. An empty broadcast means "stop".
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import torch

from visact.trainer.v1 import trainer_pb2 as pb
from visact.wire.episodes import EpisodeData, decode_episode, episode_message

#: each episode's lengths: agent id, episode id, Episode message
HEADER = "<IIQ"


def encode_batch(batch: Sequence[EpisodeData]) -> bytes:
    """Length-prefixed (agent id, episode id, Episode message bytes) triples."""
    parts = []
    for episode in batch:
        agent, episode_id = episode.agent_id.encode(), episode.episode_id.encode()
        body = episode_message(episode).SerializeToString()
        parts.append(struct.pack(HEADER, len(agent), len(episode_id), len(body)) + agent + episode_id + body)
    return b"".join(parts)


def decode_batch(data: bytes, *, latest_version: int, vocab_size: int, max_tokens: int) -> list[EpisodeData]:
    episodes, offset = [], 0
    while offset < len(data):
        agent_len, id_len, body_len = struct.unpack_from(HEADER, data, offset)
        offset += struct.calcsize(HEADER)
        agent_id = data[offset : offset + agent_len].decode()
        offset += agent_len
        episode_id = data[offset : offset + id_len].decode()
        offset += id_len
        message = pb.Episode.FromString(data[offset : offset + body_len])
        offset += body_len
        episode = decode_episode(
            message,
            agent_id=agent_id,
            latest_version=latest_version,
            vocab_size=vocab_size,
            max_tokens=max_tokens,
        )
        episode.episode_id = episode_id
        episodes.append(episode)
    return episodes


def share_batch(
    accelerator: Any, batch: Sequence[EpisodeData] | None, **decode: int
) -> list[EpisodeData] | None:
    """The main process's batch, on every process; None (from the main process) means stop."""
    if accelerator.num_processes == 1:
        return None if batch is None else list(batch)
    from accelerate.utils import broadcast

    payload = encode_batch(batch) if accelerator.is_main_process and batch else b""
    size = torch.tensor([len(payload)], dtype=torch.long, device=accelerator.device)
    size = broadcast(size, from_process=0)
    length = int(size.item())
    if length == 0:
        return None
    if accelerator.is_main_process:
        buffer = torch.frombuffer(bytearray(payload), dtype=torch.uint8).to(accelerator.device)
    else:
        buffer = torch.empty(length, dtype=torch.uint8, device=accelerator.device)
    buffer = broadcast(buffer, from_process=0)
    if accelerator.is_main_process:
        return list(batch or [])
    return decode_batch(bytes(buffer.cpu().numpy().tobytes()), **decode)
