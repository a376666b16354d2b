"""Benchmark worker for the floors: what a round trip between two processes costs here, no game.

    python bench/peers/floor_worker.py            # the worker (the orchestrator talks to it)
    python bench/peers/floor_worker.py pipe-echo  # a child: answers each byte with one frame
    python bench/peers/floor_worker.py grpc-echo --port-file F  # a child: a bare gRPC server

Each "step" here is one round trip that carries what a NumberLine step carries back (a
300x300 frame: 270,000 raw bytes, or its ~13 KB PNG) and turns it into a numpy image, with
no environment, no session and no protobuf message on either side:

- ``floor_1_raw_wakeup``: one byte to a child process over a pipe and one byte back: the
  least any transport that waits (blocks) for its answer pays, whatever it carries.
- ``floor_1_raw_spin``: no waiting at all: a counter in shared memory that a child process
  watches in a busy loop and answers by writing another (each side burns a core while it
  waits). The only kind of channel fast enough for a game that steps in microseconds.
- ``floor_1_raw_spin_game``: that channel with the game behind it: NumberLine steps in the
  child, the action goes over as bytes, reward and flags come back as numbers, each new
  frame is copied once into a shared slot and then handed back by its slot number (a
  read-only view, no copy), task and legal actions only when they change. No protocol, no
  checks, no session: about the most any design that keeps the game in another process reaches.
- ``floor_1_raw_spin_game_bare``: the same channel and game with nothing marshalled: the
  action goes over as the index of a legal action, the child steps and observes exactly as
  the in-process loop does (frame, task, legal actions) and hands back the done flag alone.
  The handover by itself; the gap to ``spin_game`` is what passing the least a step must
  return costs in Python (the action's text, the frame's slot, the reward, the texts).
- ``floor_1_*_pipe``: an OS pipe to a child process that writes the frame's bytes as soon as
  it reads a request byte: the least any transport pays that crosses a process boundary and
  waits (blocks) for the answer.
- ``floor_1_*_grpc``: a bare Python gRPC server (a generic handler returning the bytes; no
  protobuf, no interceptors) on 127.0.0.1: the least any Python gRPC system (visact,
  dm_env_rpc) pays per step.

- ``floor_1_*_servicer``: no transport at all: visact's servicer (``EnvironmentServicer.step``)
  called in this process with a ``StepRequest``, and the ``StepResponse`` it builds turned into
  the client's ``StepResult`` (image decoded), never serialized: what the protocol's messages
  and checks cost on their own, whatever carries them.

Their rate divided by the in-process rate bounds what one session can reach through them.
"""

from __future__ import annotations

import argparse
import mmap
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's env_server
sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness
import harness

from visact.env_server.games.numberline import NumberLine
from visact.orchestration.processes import launch, stop_all, wait_ready

SERVICE, METHOD = "floor.Echo", "Frame"


def frame_bytes(encoding: str) -> bytes:
    """A NumberLine frame's bytes as a step sends them (raw RGB or PNG)."""
    env = NumberLine()
    env.reset(seed=0)
    frame = np.ascontiguousarray(env.render())
    return harness.png_encode(frame) if encoding == "png" else frame.tobytes()


def to_image(data: bytes, encoding: str) -> np.ndarray:
    """What every client does with an observation's bytes: a numpy image."""
    if encoding == "png":
        return harness.png_decode(data)
    side = harness.IMAGE_SIDE
    return np.frombuffer(data, dtype=np.uint8).reshape(side, side, 3)


# ------------------------------------------------------------------------------- children
def pipe_echo() -> None:
    """Answer every request byte on stdin with one frame on stdout: b"r" raw, b"p" PNG (b"w": b"w")."""
    frames = {b"r": frame_bytes("raw"), b"p": frame_bytes("png"), b"w": b"w"}
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    while request := os.read(stdin, 1):
        view = memoryview(frames[request])
        while view:
            view = view[os.write(stdout, view) :]


def spin_echo(path: Path) -> None:
    """Watch the request counter in ``path`` (shared memory) and answer it in the next slot."""
    counters = _counters(path)
    last = 0
    while (request := _spin_for_request(counters, last)) >= 0:  # -1: stop
        last = counters[1] = request


def _spin_for_request(counters: memoryview, last: int) -> int:
    """Busy-wait until counter 0 differs from ``last``; after ~0.1 s without one, look only every
    millisecond (an idle child costs nothing). The clock is read once per 4096 looks: reading it
    every time would double the round trip."""
    quiet_since = time.perf_counter()
    while True:
        for _ in range(4096):
            if (request := counters[0]) != last:
                return request
        if time.perf_counter() - quiet_since > 0.1:
            time.sleep(0.001)


def _counters(path: Path, size: int = 16) -> memoryview:
    """The first ``size`` bytes of ``path`` mapped as int64s (a memoryview: faster to index than numpy)."""
    with path.open("r+b") as file:
        return memoryview(mmap.mmap(file.fileno(), size)).cast("q")


# The spin-game block: int64 fields, then the action's bytes, then the frame slots.
REQUEST, ANSWER, OP, ACTION_LENGTH, FRAME_SLOT, DONE, TEXTS_ID, TEXTS_LENGTH, ACTION_INDEX = range(9)
REWARD_OFFSET, ACTION_OFFSET, TEXTS_OFFSET, SLOTS_OFFSET = 128, 192, 1024, 16384
RESET, STEP = 1, 2
FRAME_SLOTS = 64
FRAME_BYTES = harness.IMAGE_SIDE * harness.IMAGE_SIDE * 3
SPIN_GAME_BYTES = SLOTS_OFFSET + FRAME_SLOTS * FRAME_BYTES


def _spin_game_block(path: Path) -> tuple[mmap.mmap, memoryview, memoryview]:
    """The spin-game block mapped, with its int64 fields and its reward (float64) as views."""
    with path.open("r+b") as file:
        block = mmap.mmap(file.fileno(), SPIN_GAME_BYTES)
    fields = memoryview(block)[:REWARD_OFFSET].cast("q")
    return block, fields, memoryview(block)[REWARD_OFFSET : REWARD_OFFSET + 8].cast("d")


def spin_game(path: Path) -> None:
    """Step NumberLine for the requests written into ``path`` (see ``SpinGameSession``)."""
    block, fields, reward = _spin_game_block(path)
    env = NumberLine()
    slots: dict[int, int] = {}  # id(frozen frame) -> its slot (the frames live as long as the env's cache)
    texts: dict[tuple[str, tuple[str, ...]], int] = {}
    last = 0
    while (request := _spin_for_request(fields, last)) >= 0:
        if fields[OP] == RESET:
            env.reset(seed=request)
            fields[DONE], reward[0] = 0, 0.0
        else:
            outcome = env.step(block[ACTION_OFFSET : ACTION_OFFSET + fields[ACTION_LENGTH]].decode())
            fields[DONE], reward[0] = outcome.terminated or outcome.truncated, outcome.reward
        frame = env.render()
        slot = slots.get(id(frame))
        if slot is None:
            slot = slots[id(frame)] = len(slots)
            assert slot < FRAME_SLOTS and not frame.flags.writeable  # frozen: never changes, never freed
            start = SLOTS_OFFSET + slot * FRAME_BYTES
            block[start : start + FRAME_BYTES] = frame.tobytes()
        fields[FRAME_SLOT] = slot
        observed = (env.task_text(), tuple(env.legal_actions()))
        if (texts_id := texts.get(observed)) is None:
            texts_id = texts[observed] = len(texts)
            data = "\0".join([observed[0], *observed[1]]).encode()
            block[TEXTS_OFFSET : TEXTS_OFFSET + len(data)] = data
            fields[TEXTS_LENGTH] = len(data)
        fields[TEXTS_ID] = texts_id
        last = fields[ANSWER] = request


def spin_game_bare(path: Path) -> None:
    """Step NumberLine for the requests in ``path`` with nothing marshalled (``SpinGameSession(bare=True)``)."""
    _block, fields, _reward = _spin_game_block(path)
    env = NumberLine()
    actions = tuple(env.legal_actions())  # NumberLine's never change
    last = 0
    while (request := _spin_for_request(fields, last)) >= 0:
        if fields[OP] == RESET:
            env.reset(seed=request)
            done = False
        else:
            outcome = env.step(actions[fields[ACTION_INDEX]])
            done = outcome.terminated or outcome.truncated
        env.render(), env.task_text(), env.legal_actions()  # what the in-process loop does per step
        fields[DONE] = done
        last = fields[ANSWER] = request


def grpc_echo(port_file: Path) -> None:
    """A bare gRPC server: the request names the encoding, the answer is the frame's bytes."""
    from concurrent import futures

    import grpc

    frames = {b"raw": frame_bytes("raw"), b"png": frame_bytes("png")}
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {METHOD: grpc.unary_unary_rpc_method_handler(lambda request, _context: frames[request])}
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        options=[("grpc.max_send_message_length", 1 << 24), ("grpc.max_receive_message_length", 1 << 24)],
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    port_file.write_text(f"{port}\n")
    server.wait_for_termination()


# ------------------------------------------------------------------------------- sessions
class PipeSession:
    """One "session" over a pipe: each step is a request byte and one frame back."""

    def __init__(self, child: subprocess.Popen[bytes], encoding: str, *, image: bool = True) -> None:
        assert child.stdin is not None and child.stdout is not None
        self.write_fd, self.read_fd = child.stdin.fileno(), child.stdout.fileno()
        self.request = (b"p" if encoding == "png" else b"r") if image else b"w"
        self.size = len(frame_bytes(encoding)) if image else 1
        self.encoding, self.image = encoding, image

    def reset(self) -> list[str]:
        return self.step("")[0]

    def step(self, _action: str) -> tuple[list[str], bool]:
        os.write(self.write_fd, self.request)
        data = bytearray()
        while len(data) < self.size:
            data += os.read(self.read_fd, self.size - len(data))
        if self.image:
            to_image(bytes(data), self.encoding)
        return ["a"], False


class SpinSession:
    """One "session" over shared memory: bump the request counter, spin until it is answered."""

    def __init__(self, path: Path) -> None:
        self.counters = _counters(path)
        self.sent = 0

    def reset(self) -> list[str]:
        return self.step("")[0]

    def step(self, _action: str) -> tuple[list[str], bool]:
        self.sent += 1
        self.counters[0] = self.sent
        while self.counters[1] != self.sent:
            pass
        return ["a"], False


class SpinGameSession:
    """One NumberLine session in a child process over shared memory (``spin_game``): write the
    action, bump the request counter, spin until it is answered, read the answer in place.
    ``bare`` (for ``spin_game_bare``): the action as its index, the done flag alone read back."""

    def __init__(self, path: Path, *, bare: bool = False) -> None:
        self.block, self.fields, self.reward = _spin_game_block(path)
        self.frames: dict[int, np.ndarray] = {}
        self.texts: dict[int, tuple[str, tuple[str, ...]]] = {}
        self.sent = 0
        self.bare = bare
        self.legal = tuple(NumberLine().legal_actions())  # what bare hands back: NumberLine's never change

    def _call(self, op: int) -> tuple[list[str] | tuple[str, ...], bool]:
        fields = self.fields
        fields[OP] = op
        self.sent = sent = self.sent + 1
        fields[REQUEST] = sent
        while fields[ANSWER] != sent:
            pass
        if self.bare:
            return self.legal, bool(fields[DONE])
        slot = fields[FRAME_SLOT]
        if (image := self.frames.get(slot)) is None:
            image = np.frombuffer(self.block, np.uint8, FRAME_BYTES, SLOTS_OFFSET + slot * FRAME_BYTES)
            image = image.reshape(harness.IMAGE_SIDE, harness.IMAGE_SIDE, 3)
            image.flags.writeable = False
            self.frames[slot] = image
        assert image.shape == (harness.IMAGE_SIDE, harness.IMAGE_SIDE, 3)
        if (observed := self.texts.get(fields[TEXTS_ID])) is None:
            task, *legal = (
                bytes(self.block[TEXTS_OFFSET : TEXTS_OFFSET + fields[TEXTS_LENGTH]]).decode().split("\0")
            )
            observed = self.texts[fields[TEXTS_ID]] = (task, tuple(legal))
        return observed[1], bool(fields[DONE])

    def reset(self) -> Sequence[str]:
        return self._call(RESET)[0]

    def step(self, action: str) -> tuple[Sequence[str], bool]:
        if self.bare:
            self.fields[ACTION_INDEX] = self.legal.index(action)
            return self._call(STEP)
        data = action.encode()
        self.block[ACTION_OFFSET : ACTION_OFFSET + len(data)] = data
        self.fields[ACTION_LENGTH] = len(data)
        return self._call(STEP)


class ServicerSession:
    """One visact session with the servicer in this process and no transport in between."""

    def __init__(self, encoding: str) -> None:
        from visact import images
        from visact.env.v1 import env_pb2 as pb
        from visact.env_server.service import EnvironmentServicer

        self.pb = pb
        self.servicer = EnvironmentServicer(NumberLine)
        request = pb.CreateSessionRequest(image_encoding=images.ENCODING_NAMES[encoding])
        self.session_id = self.servicer.create_session(request).session_id
        self.seed = 0

    def reset(self) -> list[str]:
        from visact.env_server.client import _reset_result

        self.seed += 1
        request = self.pb.ResetRequest(session_id=self.session_id, seed=self.seed)
        result = _reset_result(self.servicer.reset(request, self.pb.ResetResponse()))
        return list(result.observation.legal_actions)

    def step(self, action: str) -> tuple[list[str], bool]:
        from visact.env_server.client import _step_result

        request = self.pb.StepRequest(session_id=self.session_id, action=action)
        result = _step_result(self.servicer.step(request, self.pb.StepResponse()))
        return list(result.observation.legal_actions), result.done


class GrpcSession:
    """One "session" over bare gRPC: each step is one unary call returning one frame."""

    def __init__(self, address: str, encoding: str) -> None:
        import grpc

        self.channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 1 << 24)])
        self.call = self.channel.unary_unary(f"/{SERVICE}/{METHOD}")
        self.request = encoding.encode()
        self.encoding = encoding

    def reset(self) -> list[str]:
        return self.step("")[0]

    def step(self, _action: str) -> tuple[list[str], bool]:
        to_image(self.call(self.request, timeout=30), self.encoding)
        return ["a"], False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "role",
        nargs="?",
        default="worker",
        choices=["worker", "pipe-echo", "spin-echo", "spin-game", "spin-game-bare", "grpc-echo"],
    )
    parser.add_argument("--port-file", type=Path)
    parser.add_argument("--shared", type=Path, help="spin-echo, spin-game: the shared-memory file")
    args = parser.parse_args()
    if args.role == "pipe-echo":
        pipe_echo()
        return
    if args.role == "spin-echo":
        spin_echo(args.shared)
        return
    if args.role == "spin-game":
        spin_game(args.shared)
        return
    if args.role == "spin-game-bare":
        spin_game_bare(args.shared)
        return
    if args.role == "grpc-echo":
        grpc_echo(args.port_file)
        return

    me = [sys.executable, str(Path(__file__).resolve())]
    pipe_child = launch([*me, "pipe-echo"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    scratch = Path(tempfile.mkdtemp(prefix="floor-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    shared, port_file = scratch / "counters", scratch / "port"
    shared.write_bytes(bytes(16))
    spin_child = launch([*me, "spin-echo", "--shared", str(shared)])
    game_block = scratch / "game"
    game_block.write_bytes(bytes(SPIN_GAME_BYTES))
    game_child = launch([*me, "spin-game", "--shared", str(game_block)])
    bare_block = scratch / "bare-game"
    bare_block.write_bytes(bytes(SPIN_GAME_BYTES))
    bare_child = launch([*me, "spin-game-bare", "--shared", str(bare_block)])
    grpc_child = launch([*me, "grpc-echo", "--port-file", str(port_file)])
    port = wait_ready(grpc_child, port_file, name="grpc-echo")
    address = f"127.0.0.1:{port}"

    configs: dict[str, harness.Runner] = {
        "floor_1_raw_wakeup": harness.one_session(PipeSession(pipe_child, "raw", image=False)),
        "floor_1_raw_spin": harness.one_session(SpinSession(shared)),
        "floor_1_raw_spin_game": harness.one_session(SpinGameSession(game_block)),
        "floor_1_raw_spin_game_bare": harness.one_session(SpinGameSession(bare_block, bare=True)),
    }
    for encoding in ("raw", "png"):
        configs[f"floor_1_{encoding}_pipe"] = harness.one_session(PipeSession(pipe_child, encoding))
        configs[f"floor_1_{encoding}_grpc"] = harness.one_session(GrpcSession(address, encoding))
        configs[f"floor_1_{encoding}_servicer"] = harness.one_session(ServicerSession(encoding))

    def close() -> None:
        _counters(shared)[0] = _counters(game_block)[REQUEST] = _counters(bare_block)[REQUEST] = -1
        stop_all([pipe_child, grpc_child, spin_child, game_child, bare_child], grace=10)
        shutil.rmtree(scratch, ignore_errors=True)

    harness.serve_commands(configs, close)


if __name__ == "__main__":
    main()
