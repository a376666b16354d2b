"""The trainer's gRPC service (``visact.trainer.v1.Trainer``): registration, episodes, weights."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

from trainer.admission import Admission
from trainer.episodes import InvalidEpisode
from trainer.hub import MAX_EPISODE_ID_CHARS, Hub, PublishedVersion
from visact.status import abort, shown
from visact.trainer.v1 import trainer_pb2 as pb
from visact.trainer.v1 import trainer_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "visact.trainer.v1.Trainer"
CHUNK_BYTES = 1 << 20
WATCH_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class ModelIdentity:
    """What an agent must run to be accepted."""

    name: str
    fingerprint: str
    #: what an episode must be to be accepted: trainable by this model
    admission: Admission


class TrainerServicer(pb_grpc.TrainerServicer):
    """Serves agents from the shared Hub; the learning loop runs elsewhere."""

    def __init__(self, hub: Hub, model: ModelIdentity, sampling: pb.SamplingConfig, run_id: str) -> None:
        self.hub = hub
        self.model = model
        self.sampling = sampling
        self.run_id = run_id

    def Register(self, request: pb.RegisterRequest, context: grpc.ServicerContext) -> pb.RegisterResponse:
        if request.base_fingerprint != self.model.fingerprint:
            abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"the agent runs base model {shown(request.model_name)} (fingerprint {request.base_fingerprint[:12]}...) "
                f"but this trainer trains {self.model.name!r} (fingerprint {self.model.fingerprint[:12]}...); "
                f"start the agent with --model {self.model.name}",
            )
        agent = self.hub.register(
            request.agent_name or "agent",
            list(request.environments),
            request.sessions,
            request.previous_agent_id,
        )
        log.info("agent registered", extra={"agent": agent.agent_id, "envs": ",".join(agent.environments)})
        latest = self.hub.latest.version if self.hub.latest else 0
        return pb.RegisterResponse(
            agent_id=agent.agent_id,
            latest_version=latest,
            max_policy_lag=self.hub.max_policy_lag,
            sampling=self.sampling,
            run_id=self.run_id,
        )

    def WatchVersions(
        self, request: pb.WatchVersionsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.VersionAnnouncement]:
        self._known_agent(request.agent_id, context)
        sent = -1
        while context.is_active() and not self.hub.closed:
            latest = self.hub.latest
            if latest is not None and latest.version > sent:
                sent = latest.version
                yield _announcement(latest)
            self.hub.wait_for_version_after(sent, WATCH_POLL_SECONDS)
            self.hub.touch(request.agent_id)

    def FetchWeights(
        self, request: pb.FetchWeightsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WeightsChunk]:
        self._known_agent(request.agent_id, context)
        published = self.hub.versions.get(request.version)
        if published is None:
            kept = sorted(self.hub.versions)
            abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"weights version {request.version} is not kept; kept versions: {kept}; fetch the newest",
            )
        assert published is not None
        try:
            data = published.path.read_bytes()
        except FileNotFoundError:  # dropped (keep_versions) between the lookup and the read
            abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"weights version {request.version} was just replaced; fetch the newest",
            )
        self.hub.count("weights_bytes_sent", len(data))
        self.hub.count("weights_fetches")
        for offset in range(0, max(1, len(data)), CHUNK_BYTES):
            yield pb.WeightsChunk(
                version=published.version,
                sha256=published.sha256,
                size_bytes=published.size_bytes,
                offset=offset,
                data=data[offset : offset + CHUNK_BYTES],
                file_name=published.path.name,
            )

    def SubmitEpisode(
        self, request: pb.SubmitEpisodeRequest, context: grpc.ServicerContext
    ) -> pb.SubmitEpisodeResponse:
        self._known_agent(request.agent_id, context)
        latest = self.hub.latest.version if self.hub.latest else 0
        try:
            episode = self.model.admission.episode(
                request.episode, agent_id=request.agent_id, latest_version=latest
            )
        except InvalidEpisode as exc:
            self.hub.count("episodes_refused")
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"episode refused: {exc}")
        if not request.episode_id or len(request.episode_id) > MAX_EPISODE_ID_CHARS:
            self.hub.count("episodes_refused")
            abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"episode refused: episode_id is empty or longer than {MAX_EPISODE_ID_CHARS} characters "
                f"({len(request.episode_id)}); give each a short unique id",
            )
        accepted, reason = self.hub.offer(request.episode_id, episode)
        status = pb.SubmitEpisodeResponse.ACCEPTED if accepted else pb.SubmitEpisodeResponse.WAIT
        return pb.SubmitEpisodeResponse(
            status=status, retry_after_seconds=0.0 if accepted else 0.5, latest_version=latest, reason=reason
        )

    def Heartbeat(self, request: pb.HeartbeatRequest, context: grpc.ServicerContext) -> pb.HeartbeatResponse:
        agent = self.hub.touch(request.agent_id, version=request.running_version, steps=request.steps)
        if agent is None:
            self._known_agent(request.agent_id, context)
        minimum = self.hub.min_version()
        return pb.HeartbeatResponse(
            latest_version=self.hub.latest.version if self.hub.latest else 0,
            may_roll_out=request.running_version >= minimum,
            min_version=minimum,
        )

    # ------------------------------------------------------------------ helpers
    def _known_agent(self, agent_id: str, context: grpc.ServicerContext) -> None:
        if self.hub.touch(agent_id) is None:
            abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"unknown agent id {shown(agent_id)}: register first (the trainer may have restarted or forgotten "
                "a silent agent); call Register again",
            )


def _announcement(published: PublishedVersion) -> pb.VersionAnnouncement:
    return pb.VersionAnnouncement(
        version=published.version, sha256=published.sha256, size_bytes=published.size_bytes
    )
