"""Sessions: one environment instance and one episode each, with a bound and an idle reaper.

No gRPC here: the servicer turns the typed errors into status codes.
"""

from __future__ import annotations

import enum
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from visact.env_server.core import Env
from visact.env_server.errors import ServerFull, UnknownSession
from visact.rpc.messages import shown

log = logging.getLogger(__name__)


class EpisodeState(enum.Enum):
    """Where a session's episode stands."""

    NEEDS_RESET = "needs_reset"  # created, never reset
    RUNNING = "running"
    ENDED = "ended"  # terminated or truncated; reset to go on


@dataclass
class Session:
    """One client's environment instance and its episode."""

    session_id: str
    env: Env
    image_encoding: int
    want_expert: bool
    label: str = ""
    state: EpisodeState = EpisodeState.NEEDS_RESET
    episode: int = 0
    episode_step: int = 0
    seed: int = 0
    end_reason: str = ""
    last_used: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)


class SessionStore:
    """Holds at most ``max_sessions`` sessions; closes those idle longer than ``idle_timeout``."""

    def __init__(
        self,
        env_factory: Callable[[], Env],
        *,
        max_sessions: int,
        idle_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._env_factory = env_factory
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._reaper: threading.Thread | None = None
        self._stop = threading.Event()
        self.reaped_total = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, *, image_encoding: int, want_expert: bool, label: str) -> Session:
        """A new session; raises ServerFull at the bound."""
        with self._lock:
            if self.max_sessions and len(self._sessions) >= self.max_sessions:
                raise ServerFull(
                    f"the server holds its maximum of {self.max_sessions} sessions; close sessions you no "
                    "longer use (CloseSession), wait for idle ones to be reaped, or start the server with a "
                    "larger --max-sessions"
                )
            session_id = secrets.token_hex(8)
            session = Session(session_id, self._env_factory(), image_encoding, want_expert, label)
            session.last_used = self._clock()
            self._sessions[session_id] = session
        return session

    @contextmanager
    def use(self, session_id: str) -> Iterator[Session]:
        """The session, locked for the duration of one call; raises UnknownSession."""
        session = self._get(session_id)
        with session.lock:
            if self._sessions.get(session_id) is not session:
                raise UnknownSession(f"session {shown(session_id)} was closed while this call waited for it")
            session.last_used = self._clock()
            try:
                yield session
            finally:
                session.last_used = self._clock()

    def close(self, session_id: str) -> None:
        """Remove a session; raises UnknownSession."""
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is None:
            raise UnknownSession(_unknown_message(session_id))
        _close_env(session)

    def close_all(self) -> None:
        """Remove every session (at shutdown)."""
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            _close_env(session)

    def reap_idle(self) -> list[str]:
        """Close sessions idle longer than idle_timeout; returns their ids."""
        if not self.idle_timeout:
            return []
        deadline = self._clock() - self.idle_timeout
        with self._lock:
            idle = [s for s in self._sessions.values() if s.last_used < deadline and not s.lock.locked()]
            for session in idle:
                del self._sessions[session.session_id]
        for session in idle:
            _close_env(session)
            log.info("session reaped", extra={"session": session.session_id, "label": session.label})
        self.reaped_total += len(idle)
        return [s.session_id for s in idle]

    def start_reaper(self) -> None:
        """Reap idle sessions in a daemon thread until stop_reaper()."""
        if not self.idle_timeout or self._reaper is not None:
            return
        period = min(max(self.idle_timeout / 4, 0.05), 5.0)

        def loop() -> None:
            while not self._stop.wait(period):
                self.reap_idle()

        self._reaper = threading.Thread(target=loop, name="session-reaper", daemon=True)
        self._reaper.start()

    def stop_reaper(self) -> None:
        self._stop.set()
        if self._reaper is not None:
            self._reaper.join(timeout=5)

    def _get(self, session_id: str) -> Session:
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None:
            raise UnknownSession(_unknown_message(session_id))
        return session


def _unknown_message(session_id: str) -> str:
    if not session_id:
        return "no session_id given; call CreateSession first and pass its session_id"
    return (
        f"unknown session {shown(session_id)}: it was never created on this server, was closed, or was reaped "
        "after being idle; call CreateSession for a new one"
    )


def _close_env(session: Session) -> None:
    try:
        session.env.close()
    except Exception:  # a failing close must not stop the others
        log.exception("closing the environment of session %s failed", session.session_id)
