"""What every check gets: the options of the run, the wire to the server, and its spec."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from visact.env.v1 import env_pb2 as pb
from visact.env_server.conformance.wire import CheckFailed, Wire

RAW = pb.IMAGE_ENCODING_RAW_RGB
PNG = pb.IMAGE_ENCODING_PNG


@dataclass
class Options:
    """How to run the suite (the CLI adds ``--server`` and ``--json``)."""

    token: str | None = field(
        default=None, metadata={"help": "bearer token the server wants (also checks calls without it fail)"}
    )
    tls_ca: Path | None = field(default=None, metadata={"help": "PEM CA bundle: talk TLS to the server"})
    tls_cert: Path | None = field(default=None, metadata={"help": "PEM client certificate (mutual TLS)"})
    tls_key: Path | None = field(default=None, metadata={"help": "PEM private key for --tls-cert"})
    only: list[str] = field(
        default_factory=list,
        metadata={"help": "run only this check, or a group like 'errors' (repeatable, or comma-separated)"},
    )
    episodes: int = field(default=8, metadata={"help": "episodes played by the episode checks"})
    max_wait: float = field(
        default=15.0, metadata={"help": "longest session idle timeout the reaper check waits out, seconds"}
    )
    max_capacity: int = field(
        default=64, metadata={"help": "fill the server up to max_sessions only when it is at most this"}
    )
    threads: int = field(default=8, metadata={"help": "sessions played at once by the concurrency check"})
    timeout: float = field(default=10.0, metadata={"help": "deadline of every call, seconds"})
    connect_timeout: float = field(
        default=10.0, metadata={"help": "how long to wait for the server to answer"}
    )
    step_cap: int = field(
        default=200, metadata={"help": "steps per episode when the server declares no max_episode_steps"}
    )
    seed: int = field(default=1000, metadata={"help": "base of the episode seeds and of the random policy"})

    def __post_init__(self) -> None:
        self.only = [name.strip() for entry in self.only for name in entry.split(",") if name.strip()]
        for name in ("episodes", "max_capacity", "threads", "step_cap"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("max_wait", "timeout", "connect_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together; give both or neither")


class Context:
    """The server under test as the checks see it."""

    def __init__(self, wire: Wire, options: Options) -> None:
        self.wire = wire
        self.options = options

    @cached_property
    def spec(self) -> pb.EnvironmentSpec:
        spec: pb.EnvironmentSpec = self.wire.call("Describe", pb.DescribeRequest()).spec
        return spec

    @property
    def seeded(self) -> bool:
        """Whether the server promises that a seed fixes the episode."""
        return "seeded_reset" in self.spec.capabilities

    @property
    def offers_png(self) -> bool:
        return PNG in self.spec.image_encodings

    @property
    def step_cap(self) -> int:
        """Steps to play per episode: one past the declared limit, or the option when there is none."""
        limit = self.spec.max_episode_steps
        return limit + 1 if limit > 0 else self.options.step_cap

    def policy(self, salt: int = 0) -> random.Random:
        """A seeded random number generator for picking legal actions (runs are reproducible)."""
        return random.Random(self.options.seed * 7919 + salt)

    def seed(self, offset: int = 0) -> int:
        return self.options.seed + offset

    def create_session(self, encoding: pb.ImageEncoding = RAW, *, want_expert: bool = False) -> str:
        request = pb.CreateSessionRequest(
            image_encoding=encoding, want_expert=want_expert, client_label="env-conformance"
        )
        session_id = str(self.wire.call("CreateSession", request).session_id)
        if not session_id:
            raise CheckFailed("CreateSession returned an empty session_id; expected an opaque non-empty id")
        return session_id

    def close_quietly(self, session_id: str) -> None:
        self.wire.attempt("CloseSession", pb.CloseSessionRequest(session_id=session_id))

    @contextlib.contextmanager
    def session(self, encoding: pb.ImageEncoding = RAW, *, want_expert: bool = False) -> Iterator[str]:
        """A new session, closed afterwards (whatever the check did to it)."""
        session_id = self.create_session(encoding, want_expert=want_expert)
        try:
            yield session_id
        finally:
            self.close_quietly(session_id)

    def reset(self, session_id: str, seed: int | None) -> pb.ResetResponse:
        request = pb.ResetRequest(session_id=session_id)
        if seed is not None:
            request.seed = seed
        response: pb.ResetResponse = self.wire.call("Reset", request, what=f"seed {seed}")
        return response

    def step(self, session_id: str, action: str) -> pb.StepResponse:
        request = pb.StepRequest(session_id=session_id, action=action)
        response: pb.StepResponse = self.wire.call("Step", request, what=f"action {action!r}")
        return response

    def a_legal_action(self) -> str:
        """A legal action right after a reset with the base seed (learned from a throwaway session)."""
        with self.session() as session_id:
            legal = list(self.reset(session_id, self.seed()).observation.legal_actions)
        if not legal:
            raise CheckFailed("Reset returned no legal_actions; expected at least one")
        return legal[0]
