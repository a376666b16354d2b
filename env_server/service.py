"""The one generic servicer: serves any ``Env`` class over ``visact.env.v1.Environment``.

Each call is a plain synchronous method (``create_session``, ``reset``, ``step``,
``batch_step``, ``close_session``) that takes a request message and returns a response or
raises a typed ``EnvError``. The gRPC surface (``Describe``, ``Step``, ...) is ``async``: it
runs those methods on the server's worker threads (``visact.rpc.Workers``), off the event loop,
and maps typed errors to status codes once (:meth:`EnvironmentServicer._call`). A
``BatchStepStream`` costs a coroutine while it waits for its next request, never a thread.
``BatchStep`` runs the same methods per item and reports errors in-band.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import numpy as np
from google.protobuf import json_format, struct_pb2

from visact import images
from visact.env.v1 import env_pb2 as pb
from visact.env_server.core import Env, ExpertMove, StepOutcome
from visact.env_server.errors import EnvError, InvalidAction, InvalidRequest, ResetNeeded
from visact.env_server.sessions import EpisodeState, Session, SessionStore
from visact.env_server.wire_bytes import batch_response_bytes
from visact.rpc import StreamSlots, Workers, abort
from visact.rpc.messages import bounded

log = logging.getLogger(__name__)

PROTOCOL_VERSION = "v1"
SERVICE = pb.DESCRIPTOR.services_by_name["Environment"]
SERVICE_NAME = SERVICE.full_name

Req = TypeVar("Req")
Resp = TypeVar("Resp")


#: The most bytes a result takes beyond its image (task text, legal actions, expert, info,
#: framing). An environment that says more fails the call (INTERNAL): every BatchStep of at most
#: max_batch_items items then fits max_message_bytes, as the .proto promises.
RESULT_TEXT_BYTES = 64 * 1024


@dataclass(frozen=True)
class ServiceLimits:
    """The servicer's bounds (the process config fills them)."""

    max_sessions: int = 1024
    idle_timeout: float = 300.0
    max_message_bytes: int = 128 * 1024 * 1024
    max_batch_items: int = 0  # 0: as many results as fit max_message_bytes (fewer are clamped to it)
    png_cache_entries: int = 1024  # PNGs of frozen frames kept to be sent again (0: off)
    max_streams: int = 4096  # BatchStepStream calls open at once (0: no limit)


def fitting_batch_items(image_shape: tuple[int, int, int], max_message_bytes: int) -> int:
    """How many results fit one message at worst (each image in its largest encoding); raises
    ValueError when not even one does."""
    worst = images.max_encoded_bytes(image_shape) + RESULT_TEXT_BYTES
    fitting = max_message_bytes // worst
    if fitting < 1:
        raise ValueError(
            f"one {image_shape[0]}x{image_shape[1]} observation takes up to {worst} bytes, more than the "
            f"message limit of {max_message_bytes}; raise --max-message-mb"
        )
    return fitting


class EnvironmentServicer:
    """Serves sessions of one ``Env`` class."""

    def __init__(
        self,
        env_factory: Callable[[], Env],
        limits: ServiceLimits | None = None,
        workers: Workers | None = None,
    ) -> None:
        limits = limits or ServiceLimits()
        self._probe = env_factory()  # describes the environment; never stepped
        fitting = fitting_batch_items(self._probe.image_shape, limits.max_message_bytes)
        if limits.max_batch_items > fitting:
            log.warning(
                "max_batch_items lowered to what fits the message limit",
                extra={
                    "asked": limits.max_batch_items,
                    "fits": fitting,
                    "max_message_bytes": limits.max_message_bytes,
                },
            )
        limits = dataclasses.replace(limits, max_batch_items=min(limits.max_batch_items or fitting, fitting))
        self.limits = limits
        self.workers = workers or Workers(1)
        self.streams = StreamSlots(limits.max_streams, "BatchStepStream calls", "--max-streams")
        self.sessions = SessionStore(
            env_factory, max_sessions=self.limits.max_sessions, idle_timeout=self.limits.idle_timeout
        )
        self.spec = self._build_spec(self._probe)
        self.spec.max_sessions = limits.max_sessions
        self.spec.session_idle_timeout_seconds = limits.idle_timeout
        self.spec.max_message_bytes = limits.max_message_bytes
        self.spec.max_batch_items = limits.max_batch_items
        self._encodings = set(self.spec.image_encodings)
        self._pngs = images.PngCache(limits.png_cache_entries)
        self._batch = threading.local()  # the BatchStep this thread is serving, if any
        self._has_expert = "expert" in self.spec.capabilities

    # ------------------------------------------------------------------ gRPC surface
    async def Describe(
        self, request: pb.DescribeRequest, context: grpc.aio.ServicerContext
    ) -> pb.DescribeResponse:
        return pb.DescribeResponse(spec=self.spec)

    async def CreateSession(
        self, request: pb.CreateSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateSessionResponse:
        return await self._call(self.create_session, request, context)

    async def Reset(self, request: pb.ResetRequest, context: grpc.aio.ServicerContext) -> pb.ResetResponse:
        return await self._call(self.reset, request, context)

    async def Step(self, request: pb.StepRequest, context: grpc.aio.ServicerContext) -> pb.StepResponse:
        return await self._call(self.step, request, context)

    async def BatchStep(self, request: pb.BatchStepRequest, context: grpc.aio.ServicerContext) -> bytes:
        return await self._call(self.batch_step_bytes, request, context)

    async def BatchStepStream(
        self, requests: AsyncIterator[pb.BatchStepRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        async with self.streams.slot(context):
            async for request in requests:
                yield await self._call(self.batch_step_bytes, request, context)

    async def CloseSession(
        self, request: pb.CloseSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CloseSessionResponse:
        return await self._call(self.close_session, request, context)

    async def _call(
        self, handler: Callable[[Req], Resp], request: Req, context: grpc.aio.ServicerContext
    ) -> Resp:
        """``handler(request)`` on a worker thread; typed errors become their status code, anything
        else INTERNAL."""
        try:
            return await self.workers.run(handler, request)
        except EnvError as exc:
            await abort(context, exc.code, str(exc))
        except Exception as exc:
            log.exception("unexpected error in %s", getattr(handler, "__name__", "call"))
            await abort(
                context, grpc.StatusCode.INTERNAL, f"the environment raised {exc!r}; see the server log"
            )

    # ------------------------------------------------------------------ the calls
    def create_session(self, request: pb.CreateSessionRequest) -> pb.CreateSessionResponse:
        encoding = request.image_encoding or images.RAW
        if encoding not in self._encodings:
            offered = ", ".join(pb.ImageEncoding.Name(e) for e in sorted(self._encodings))
            raise InvalidRequest(
                f"image_encoding {encoding} is not offered by this server; offered: {offered}"
            )
        if request.want_expert and not self._has_expert:
            raise InvalidRequest(
                f"want_expert was set but environment {self.spec.name!r} has no expert; "
                "create the session without want_expert"
            )
        session = self.sessions.create(
            image_encoding=encoding, want_expert=request.want_expert, label=request.client_label[:200]
        )
        log.debug("session created", extra={"session": session.session_id, "label": session.label})
        return pb.CreateSessionResponse(session_id=session.session_id)

    def reset(self, request: pb.ResetRequest, out: pb.ResetResponse | None = None) -> pb.ResetResponse:
        """Start an episode; fills and returns ``out`` (built in place: images are large)."""
        out = pb.ResetResponse() if out is None else out
        with self.sessions.use(request.session_id) as session:  # NOT_FOUND before INVALID_ARGUMENT
            options = self._reset_options(request.options) if request.HasField("options") else None
            seed = request.seed if request.HasField("seed") else _fresh_seed()
            try:
                session.env.reset(seed=_env_seed(seed), options=options)
            except EnvError:
                raise
            except Exception as exc:
                session.state = EpisodeState.ENDED
                session.end_reason = f"the environment failed to reset: {exc!r}"
                raise
            session.state = EpisodeState.RUNNING
            session.episode += 1
            session.episode_step = 0
            session.seed = seed
            self._observe(session, out.observation)
            out.seed, out.episode = seed, session.episode
            _check_text_bytes(session, out, out.observation)
            return out

    def step(self, request: pb.StepRequest, out: pb.StepResponse | None = None) -> pb.StepResponse:
        """Apply one action; fills and returns ``out``."""
        out = pb.StepResponse() if out is None else out
        with self.sessions.use(request.session_id) as session:
            self._check_can_step(session)
            legal = session.env.legal_actions()
            if request.action not in legal:
                raise InvalidAction(_illegal_action_message(request.action, legal))
            try:
                outcome = session.env.step(request.action)
            except EnvError:
                raise  # the env refused the action; its state is unchanged
            except Exception as exc:
                session.state = EpisodeState.ENDED
                session.end_reason = f"the environment failed on action {request.action!r}: {exc!r}"
                raise
            session.episode_step += 1
            outcome = self._apply_time_limit(session, outcome)
            if outcome.terminated or outcome.truncated:
                if "success" not in outcome.info:  # the protocol promises it on every last step
                    outcome = dataclasses.replace(outcome, info={**outcome.info, "success": False})
                session.state = EpisodeState.ENDED
                session.end_reason = "terminated" if outcome.terminated else "truncated"
            self._observe(session, out.observation)
            out.reward = float(outcome.reward)
            out.terminated, out.truncated = outcome.terminated, outcome.truncated
            if outcome.info:
                out.info.update(_jsonable(dict(outcome.info)))
            out.episode_step = session.episode_step
            _check_text_bytes(session, out, out.observation)
            return out

    def batch_step(self, request: pb.BatchStepRequest) -> pb.BatchStepResponse:
        """The BatchStep as a message (for callers in this process)."""
        response, frames = self._batch_step(request)
        for index, frame in frames:
            result = response.results[index]
            kind = result.WhichOneof("result")
            if kind in ("reset", "step"):
                getattr(result, kind).observation.image.data = frame.tobytes()
        return response

    def batch_step_bytes(self, request: pb.BatchStepRequest) -> bytes:
        """The BatchStep as the wire bytes of its response, raw frames copied once
        (``visact.env_server.wire_bytes``): what the gRPC methods send."""
        return batch_response_bytes(*self._batch_step(request))

    def _batch_step(
        self, request: pb.BatchStepRequest
    ) -> tuple[pb.BatchStepResponse, list[tuple[int, np.ndarray]]]:
        """The response with its raw images left empty, and those images' frames by result index."""
        if len(request.items) > self.limits.max_batch_items:
            raise InvalidRequest(
                f"a batch may hold at most {self.limits.max_batch_items} items; got {len(request.items)}; "
                "split it into smaller batches"
            )
        response = pb.BatchStepResponse()
        pending: list[tuple[pb.BatchResult, pb.Image, Callable[[], bytes]]] = []
        frames: list[tuple[int, np.ndarray]] = []
        self._batch.pending = pending  # _observe leaves this batch's PNG encoding for the end
        self._batch.frames = frames  # and its raw frames out of the messages
        try:
            for index, item in enumerate(request.items):
                self._batch.index = index
                self._batch.result = response.results.add()
                self._batch_item(item, self._batch.result)
        finally:
            self._batch.pending = self._batch.result = self._batch.frames = None
        if pending:
            self._encode_pending(pending)
        return response, frames

    def close_session(self, request: pb.CloseSessionRequest) -> pb.CloseSessionResponse:
        self.sessions.close(request.session_id)
        return pb.CloseSessionResponse()

    # ------------------------------------------------------------------ helpers
    def _batch_item(self, item: pb.BatchItem, out: pb.BatchResult) -> None:
        kind = item.WhichOneof("call")
        try:
            if kind == "reset":
                self.reset(item.reset, out.reset)
            elif kind == "step":
                self.step(item.step, out.step)
            else:
                raise InvalidRequest("batch item has neither 'reset' nor 'step' set; set exactly one")
        except EnvError as exc:
            out.error.CopyFrom(pb.Error(code=exc.code.value[0], message=bounded(str(exc))))
        except Exception as exc:
            log.exception("batch item failed")
            out.error.CopyFrom(pb.Error(code=grpc.StatusCode.INTERNAL.value[0], message=bounded(repr(exc))))

    def _encode_pending(self, pending: list[tuple[pb.BatchResult, pb.Image, Callable[[], bytes]]]) -> None:
        """Encode a batch's PNG images on several threads (each frame was copied when observed);
        an item whose image fails to encode gets the INTERNAL error it would have got inline."""
        encoded = images.parallel_map(_call, [encode for _, _, encode in pending])
        for (result, image, _), data in zip(pending, encoded, strict=True):
            if result.WhichOneof("result") == "error":  # the item failed after it was observed
                continue
            if isinstance(data, BaseException):
                log.error("batch item failed", exc_info=data)
                result.error.CopyFrom(pb.Error(code=grpc.StatusCode.INTERNAL.value[0], message=repr(data)))
            else:
                image.data = data

    def _check_can_step(self, session: Session) -> None:
        if session.state is EpisodeState.NEEDS_RESET:
            raise ResetNeeded(f"session {session.session_id!r} has no episode yet; call Reset before Step")
        if session.state is EpisodeState.ENDED:
            raise ResetNeeded(
                f"the episode of session {session.session_id!r} has ended ({session.end_reason}); "
                "call Reset to start a new one"
            )

    def _apply_time_limit(self, session: Session, outcome: StepOutcome) -> StepOutcome:
        limit = session.env.max_episode_steps
        if limit and session.episode_step >= limit and not (outcome.terminated or outcome.truncated):
            info = {**outcome.info, "success": outcome.info.get("success", False)}
            return StepOutcome(outcome.reward, terminated=False, truncated=True, info=info)
        return outcome

    def _observe(self, session: Session, out: pb.Observation) -> None:
        env = session.env
        frame = env.render()
        frames = getattr(self._batch, "frames", None)
        if session.image_encoding == images.PNG:
            self._observe_png(frame, out.image)
        elif frames is not None:  # inside a BatchStep: the frame joins the wire bytes at the end
            images.describe_into(frame, images.RAW, out.image)
            # a frame the game may still change is copied now, as tobytes would have
            frames.append((self._batch.index, frame if images.unchangeable(frame) else frame.copy()))
        else:
            images.encode_into(frame, session.image_encoding, out.image)
        out.task = env.task_text()
        out.legal_actions.extend(env.legal_actions())
        if session.want_expert:
            move = env.expert() if session.state is EpisodeState.RUNNING else None
            if move is not None:
                out.expert.CopyFrom(_expert_message(move))

    def _observe_png(self, frame: np.ndarray, out: pb.Image) -> None:
        """``frame`` as PNG into ``out``: from the cache when this frozen frame was encoded before,
        later (``_encode_pending``) inside a BatchStep, else now."""
        images.describe_into(frame, images.PNG, out)
        cached = self._pngs.get(frame)
        if cached is not None:
            out.data = cached
            return
        encode = images.png_later(frame)

        def encode_and_keep() -> bytes:
            data = encode()
            self._pngs.put(frame, data)
            return data

        pending = getattr(self._batch, "pending", None)
        if pending is not None:
            pending.append((self._batch.result, out, encode_and_keep))
        else:
            out.data = encode_and_keep()

    def _reset_options(self, options: struct_pb2.Struct) -> dict[str, Any]:
        try:
            values = json_format.MessageToDict(options)
        except ValueError as exc:  # NaN or infinity: JSON has no such numbers
            raise InvalidRequest(f"reset options must be JSON values (finite numbers): {exc}") from None
        unknown = sorted(set(values) - set(self._probe.reset_option_names))
        if unknown:
            accepted = ", ".join(self._probe.reset_option_names) or "(none)"
            raise InvalidRequest(f"unknown reset option(s) {unknown}; {self.spec.name} accepts: {accepted}")
        return values

    @staticmethod
    def _build_spec(env: Env) -> pb.EnvironmentSpec:
        height, width, channels = env.image_shape
        capabilities = ["batch_step", "batch_step_stream", "png", "seeded_reset"]
        if env.has_expert:
            capabilities.append("expert")
        if env.reset_option_names:
            capabilities.append("reset_options")
        return pb.EnvironmentSpec(
            name=env.name,
            protocol_version=PROTOCOL_VERSION,
            image_height=height,
            image_width=width,
            image_channels=channels,
            image_encodings=[images.RAW, images.PNG],
            action_space=pb.ActionSpace(vocabulary=list(env.action_vocabulary), dynamic=env.dynamic_actions),
            max_episode_steps=env.max_episode_steps,
            capabilities=capabilities,
            fact_keys=list(env.fact_keys),
            reset_option_names=list(env.reset_option_names),
            description=env.description,
        )


def _text_bytes(out: pb.ResetResponse | pb.StepResponse, observation: pb.Observation) -> int:
    """The bytes ``out`` takes on the wire beyond its image, counted without serializing (or even
    reading) the frame: each would copy 270 KB per observation. An upper bound: every string and
    field counted with 8 bytes of tag and length."""
    size = len(observation.task.encode()) + sum(len(a.encode()) + 8 for a in observation.legal_actions)
    if observation.HasField("expert"):
        size += observation.expert.ByteSize()
    if isinstance(out, pb.StepResponse):
        size += out.info.ByteSize()
    return size + 64  # the scalars, the image's sizes and encoding, and the framing


def _check_text_bytes(
    session: Session, out: pb.ResetResponse | pb.StepResponse, observation: pb.Observation
) -> None:
    """Fail a result whose text (all but the image) is over RESULT_TEXT_BYTES, ending the episode
    as any failure of the environment does: it would break the promise that a full BatchStep fits
    the message limit."""
    text_bytes = _text_bytes(out, observation)
    if text_bytes > RESULT_TEXT_BYTES:
        session.state = EpisodeState.ENDED
        session.end_reason = f"the environment's result text took {text_bytes} bytes"
        raise RuntimeError(
            f"the environment's observation text, legal actions and info take {text_bytes} bytes, over the "
            f"protocol's {RESULT_TEXT_BYTES} per result; shorten what task_text(), legal_actions() or info return"
        )


def _call(function: Callable[[], bytes]) -> bytes:
    return function()


def _illegal_action_message(action: str, legal: list[str]) -> str:
    shown = action if len(action) <= 80 else action[:77] + "..."
    return f"action {shown!r} is not legal now; expected one of {legal}"


def _fresh_seed() -> int:
    return int(np.random.default_rng().integers(0, 2**31 - 1))


def _env_seed(seed: int) -> int:
    """The wire's int64 seed as the non-negative int numpy and Gymnasium take (one to one; -1 is 2**64 - 1)."""
    return seed % 2**64


def _expert_message(move: ExpertMove) -> pb.Expert:
    return pb.Expert(
        action=move.action,
        thoughts=move.thoughts,
        facts=[pb.Fact(key=k, value=v) for k, v in move.facts],
    )


def _jsonable(value: Any) -> Any:
    """numpy scalars and tuples to what a protobuf Struct holds."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
