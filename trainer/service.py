"""The trainer's gRPC service (``visact.trainer.v1.Trainer``): registration, episodes, weights.

Every method is a coroutine on the server's event loop (``visact.rpc``): a ``WatchVersions``
stream waits on :class:`VersionBell` and costs no thread, so one trainer follows thousands of
agents. Decoding an episode and reading weights run on the server's worker threads; the Hub's
short critical sections run inline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import grpc

from visact.rpc import StreamSlots, Workers, abort, event_loop
from visact.rpc.messages import shown
from visact.trainer.admission import Admission
from visact.trainer.hub import MAX_EPISODE_ID_CHARS, Hub, PublishedVersion, TooManyAgents
from visact.trainer.v1 import trainer_pb2 as pb
from visact.wire.episodes import EpisodeData, InvalidEpisode

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["Trainer"]
SERVICE_NAME = SERVICE.full_name
CHUNK_BYTES = 1 << 20
#: a WatchVersions stream marks its agent alive this often while no version comes
WATCH_POLL_SECONDS = 1.0


class VersionBell:
    """Wakes every coroutine waiting for a new version; rung from any thread (the learner's)."""

    def __init__(self) -> None:
        self._loop = event_loop()
        self._next: asyncio.Future[None] = self._loop.create_future()

    def ring(self) -> None:
        self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._next.set_result(None)
        self._next = self._loop.create_future()

    async def wait(self, timeout: float) -> None:
        """Until the next ring, or ``timeout`` seconds (on the loop)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._next), timeout)


@dataclass(frozen=True)
class ModelIdentity:
    """What an agent must run to be accepted."""

    name: str
    fingerprint: str
    #: what an episode must be to be accepted: trainable by this model
    admission: Admission


class TrainerServicer:
    """Serves agents from the shared Hub; the learning loop runs elsewhere."""

    def __init__(
        self,
        hub: Hub,
        model: ModelIdentity,
        sampling: pb.SamplingConfig,
        run_id: str,
        lora: pb.LoraLayout | None = None,
        workers: Workers | None = None,
        max_streams: int = 0,
    ) -> None:
        """``max_streams``: WatchVersions and FetchWeights streams each held at once (0: twice the
        hub's max_agents)."""
        self.hub = hub
        self.model = model
        self.sampling = sampling
        self.run_id = run_id
        self.lora = lora or pb.LoraLayout()  # the layout of the published adapters, told at Register
        self.workers = workers or Workers(2, "trainer-work")
        self.bell = VersionBell()
        hub.add_publish_listener(self.bell.ring)
        limit = max_streams or 2 * hub.max_agents
        self.watch_streams = StreamSlots(limit, "WatchVersions streams", "--max-agents")
        self.fetch_streams = StreamSlots(limit, "FetchWeights streams", "--max-agents")

    async def Register(
        self, request: pb.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterResponse:
        if request.base_fingerprint != self.model.fingerprint:
            await abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"the agent runs base model {shown(request.model_name)} (fingerprint {request.base_fingerprint[:12]}...) "
                f"but this trainer trains {self.model.name!r} (fingerprint {self.model.fingerprint[:12]}...); "
                f"start the agent with --model {self.model.name}",
            )
        try:
            agent = self.hub.register(
                request.agent_name or "agent",
                list(request.environments),
                request.sessions,
                request.previous_agent_id,
            )
        except TooManyAgents as exc:
            await abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        log.info("agent registered", extra={"agent": agent.agent_id, "envs": ",".join(agent.environments)})
        latest = self.hub.latest.version if self.hub.latest else 0
        return pb.RegisterResponse(
            agent_id=agent.agent_id,
            latest_version=latest,
            max_policy_lag=self.hub.max_policy_lag,
            sampling=self.sampling,
            run_id=self.run_id,
            lora=self.lora,
        )

    async def WatchVersions(
        self, request: pb.WatchVersionsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.VersionAnnouncement]:
        await self._known_agent(request.agent_id, context)
        async with self.watch_streams.slot(context):
            sent = -1
            while not self.hub.closed:
                latest = self.hub.latest
                if latest is not None and latest.version > sent:
                    sent = latest.version
                    yield _announcement(latest)
                await self.bell.wait(WATCH_POLL_SECONDS)
                self.hub.touch(request.agent_id)

    async def FetchWeights(
        self, request: pb.FetchWeightsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WeightsChunk]:
        await self._known_agent(request.agent_id, context)
        published = self.hub.versions.get(request.version)
        if published is None:
            kept = sorted(self.hub.versions)
            await abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"weights version {request.version} is not kept; kept versions: {kept}; fetch the newest",
            )
        async with self.fetch_streams.slot(context):
            try:  # open once: a version dropped (keep_versions) while it streams still reads whole
                handle = await self.workers.run(_open_binary, published.path)
            except FileNotFoundError:  # dropped between the lookup and the open
                await abort(
                    context,
                    grpc.StatusCode.NOT_FOUND,
                    f"weights version {request.version} was just replaced; fetch the newest",
                )
            try:
                async for chunk in self._chunks(published, handle):
                    yield chunk
            finally:
                handle.close()
            self.hub.count("weights_fetches")

    async def _chunks(self, published: PublishedVersion, handle: BinaryIO) -> AsyncIterator[pb.WeightsChunk]:
        """The file in CHUNK_BYTES pieces, one read at a time (a slow reader holds one chunk)."""
        offset = 0
        while True:
            data = await self.workers.run(handle.read, CHUNK_BYTES)
            if data or offset == 0:  # an empty file is one empty chunk
                self.hub.count("weights_bytes_sent", len(data))
                yield pb.WeightsChunk(
                    version=published.version,
                    sha256=published.sha256,
                    size_bytes=published.size_bytes,
                    offset=offset,
                    data=data,
                    file_name=published.path.name,
                )
            offset += len(data)
            if len(data) < CHUNK_BYTES:
                return

    async def SubmitEpisode(
        self, request: pb.SubmitEpisodeRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitEpisodeResponse:
        await self._known_agent(request.agent_id, context)
        latest = self.hub.latest.version if self.hub.latest else 0
        try:
            episode = await self.workers.off_loop(self.check_episode, request, latest)
        except InvalidEpisode as exc:
            self.hub.count("episodes_refused")
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"episode refused: {exc}")
        accepted, reason = self.hub.offer(request.episode_id, episode)
        status = pb.SubmitEpisodeResponse.ACCEPTED if accepted else pb.SubmitEpisodeResponse.WAIT
        return pb.SubmitEpisodeResponse(
            status=status, retry_after_seconds=0.0 if accepted else 0.5, latest_version=latest, reason=reason
        )

    def check_episode(self, request: pb.SubmitEpisodeRequest, latest_version: int) -> EpisodeData:
        """The episode decoded and checked whole, trainable by this model (on a worker thread);
        raises InvalidEpisode."""
        episode = self.model.admission.episode(
            request.episode, agent_id=request.agent_id, latest_version=latest_version
        )
        if not request.episode_id or len(request.episode_id) > MAX_EPISODE_ID_CHARS:
            raise InvalidEpisode(
                f"episode_id is empty or longer than {MAX_EPISODE_ID_CHARS} characters "
                f"({len(request.episode_id)}); give each a short unique id"
            )
        return episode

    async def Heartbeat(
        self, request: pb.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> pb.HeartbeatResponse:
        agent = self.hub.touch(request.agent_id, version=request.running_version, steps=request.steps)
        if agent is None:
            await self._known_agent(request.agent_id, context)
        minimum = self.hub.min_version()
        return pb.HeartbeatResponse(
            latest_version=self.hub.latest.version if self.hub.latest else 0,
            may_roll_out=request.running_version >= minimum,
            min_version=minimum,
        )

    # ------------------------------------------------------------------ helpers
    async def _known_agent(self, agent_id: str, context: grpc.aio.ServicerContext) -> None:
        if self.hub.touch(agent_id) is None:
            await abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"unknown agent id {shown(agent_id)}: register first (the trainer may have restarted or forgotten "
                "a silent agent); call Register again",
            )


def _open_binary(path: Path) -> BinaryIO:
    return path.open("rb")


def _announcement(published: PublishedVersion) -> pb.VersionAnnouncement:
    return pb.VersionAnnouncement(
        version=published.version, sha256=published.sha256, size_bytes=published.size_bytes
    )
