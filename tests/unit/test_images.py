"""The image codec: PNG files written without Pillow, read back by anyone; batches encode and
decode their PNG images on several threads and give what one-by-one calls give."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from visact import images
from visact.env.v1 import env_pb2 as pb
from visact.env_server import client, games
from visact.env_server.service import EnvironmentServicer


def _frames() -> list[np.ndarray]:
    """A frame of each of RL4VLM's four card games."""
    frames = []
    for name in ("blackjack", "ezpoints", "numberline", "points24"):
        env = games.make(name)
        env.reset(seed=3)
        frames.append(env.render())
    return frames


@pytest.mark.parametrize("index", range(4))
def test_png_bytes_is_a_png_of_the_same_pixels(index: int) -> None:
    frame = _frames()[index]
    data = images.png_bytes(frame)
    with Image.open(io.BytesIO(data)) as pil:
        assert (pil.format, pil.mode, pil.size) == ("PNG", "RGB", (frame.shape[1], frame.shape[0]))
        assert np.array_equal(np.asarray(pil), frame)
    decoded = images.decode(images.encode(frame, images.PNG))
    assert np.array_equal(decoded, frame)
    assert decoded.dtype == np.uint8 and not decoded.flags.writeable


def test_png_bytes_takes_rgba_strided_and_other_arrays() -> None:
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (7, 9, 4), dtype=np.uint8)
    with Image.open(io.BytesIO(images.png_bytes(rgba))) as pil:
        assert pil.mode == "RGBA" and np.array_equal(np.asarray(pil), rgba)
    strided = np.asfortranarray(rng.integers(0, 256, (5, 12, 3), dtype=np.uint8))[:, ::2]
    assert np.array_equal(images.decode_png(images.png_bytes(strided)), strided)
    gray = rng.integers(0, 256, (4, 6), dtype=np.uint8)  # Pillow writes what the fast path does not
    with Image.open(io.BytesIO(images.png_bytes(gray))) as pil:
        assert pil.mode == "L" and np.array_equal(np.asarray(pil), gray)


def test_decode_png_reads_pillow_files_and_refuses_damage_with_its_own_error() -> None:
    frame = _frames()[0]
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")  # filtered rows: the Pillow path
    assert np.array_equal(images.decode_png(buffer.getvalue()), frame)
    data = images.png_bytes(frame)
    for position in range(0, len(data), 97):
        damaged = bytearray(data)
        damaged[position] ^= 0x5A
        try:
            array = images.decode_png(bytes(damaged))
        except images.ImageDecodeError:
            continue
        assert array.shape == frame.shape  # a flip Pillow tolerates still gives an image
    for cut in (0, 8, 33, len(data) // 2):
        with pytest.raises(images.ImageDecodeError):
            images.decode_png(data[:cut])


def test_parallel_map_keeps_order_and_returns_exceptions() -> None:
    def half(x: int) -> int:
        if x == 3:
            raise ValueError("three")
        return x // 2

    out = images.parallel_map(half, list(range(8)))
    assert [o for i, o in enumerate(out) if i != 3] == [0, 0, 1, 2, 2, 3, 3]
    assert isinstance(out[3], ValueError)


def test_a_png_batch_gives_the_images_one_by_one_calls_give() -> None:
    def open_sessions(servicer: EnvironmentServicer) -> list[str]:
        request = pb.CreateSessionRequest(image_encoding=images.PNG)
        return [servicer.create_session(request).session_id for _ in range(6)]

    batched = EnvironmentServicer(lambda: games.make("numberline"))
    sids = open_sessions(batched)
    resets = [pb.BatchItem(reset=pb.ResetRequest(session_id=s, seed=i)) for i, s in enumerate(sids)]
    steps = [pb.BatchItem(step=pb.StepRequest(session_id=s, action="+")) for s in sids]
    unknown = pb.BatchItem(step=pb.StepRequest(session_id="nope", action="+"))
    results = batched.batch_step(pb.BatchStepRequest(items=[*resets, *steps, unknown])).results
    decoded = client._decode_images(results)
    assert results[-1].WhichOneof("result") == "error" and decoded[-1] is None

    one_by_one = EnvironmentServicer(lambda: games.make("numberline"))
    twins = open_sessions(one_by_one)
    expected = [
        one_by_one.reset(pb.ResetRequest(session_id=s, seed=i), pb.ResetResponse())
        for i, s in enumerate(twins)
    ] + [one_by_one.step(pb.StepRequest(session_id=s, action="+"), pb.StepResponse()) for s in twins]
    for i, want in enumerate(expected):
        got = getattr(results[i], "reset" if i < len(sids) else "step").observation.image
        assert got.encoding == images.PNG and (got.height, got.width) == (300, 300)
        assert got.data == want.observation.image.data
        assert np.array_equal(decoded[i], images.decode(want.observation.image))


def _frozen(value: int) -> np.ndarray:
    frame = np.full((4, 5, 3), value, dtype=np.uint8)
    frame.setflags(write=False)
    return frame


def test_png_cache_answers_only_for_the_same_frozen_object() -> None:
    cache = images.PngCache(size=2)
    frame = _frozen(7)
    assert cache.get(frame) is None
    cache.put(frame, b"png-7")
    assert cache.get(frame) == b"png-7"
    assert cache.get(_frozen(7)) is None  # equal pixels, another object: not trusted

    writable = np.zeros((4, 5, 3), dtype=np.uint8)
    cache.put(writable, b"never")
    assert cache.get(writable) is None  # it could change: always encoded afresh
    view = _frozen(1)[1:]  # read-only, but a view of another array's memory
    cache.put(view, b"never")
    assert cache.get(view) is None

    a, b = _frozen(1), _frozen(2)
    cache.put(a, b"a")
    cache.put(b, b"b")
    assert cache.get(frame) is None and len(cache) == 2  # least recently used went first
    del a  # a freed frame takes its entry with it (its id may come back as another array's)
    assert len(cache) == 1 and cache.get(b) == b"b"


@pytest.mark.parametrize("batched", [False, True])
def test_the_server_compresses_a_frozen_frame_once_and_sends_the_same_bytes(batched: bool) -> None:
    servicer = EnvironmentServicer(lambda: games.make("numberline"))
    sid = servicer.create_session(pb.CreateSessionRequest(image_encoding=images.PNG)).session_id

    def reset() -> pb.Image:
        request = pb.ResetRequest(session_id=sid, seed=5)
        if batched:
            results = servicer.batch_step(pb.BatchStepRequest(items=[pb.BatchItem(reset=request)])).results
            return results[0].reset.observation.image
        return servicer.reset(request, pb.ResetResponse()).observation.image

    first, again = reset(), reset()
    assert servicer._pngs.misses == 1 and servicer._pngs.hits == 1
    assert again.data == first.data and again.height == first.height == 300
    env = games.make("numberline")
    env.reset(seed=5)
    assert np.array_equal(images.decode(again), env.render())


def test_frames_that_may_change_are_encoded_every_time() -> None:
    class Counter(games.make("numberline").__class__):  # type: ignore[misc]
        shade = 0

        def render(self) -> np.ndarray:
            Counter.shade += 1
            return np.full((300, 300, 3), Counter.shade, dtype=np.uint8)  # writable, new each time

    servicer = EnvironmentServicer(Counter)
    sid = servicer.create_session(pb.CreateSessionRequest(image_encoding=images.PNG)).session_id
    shades = [
        int(
            images.decode(
                servicer.reset(pb.ResetRequest(session_id=sid, seed=1), pb.ResetResponse()).observation.image
            )[0, 0, 0]
        )
        for _ in range(3)
    ]
    assert shades == sorted(set(shades)) and len(shades) == 3
    assert servicer._pngs.hits == 0 and len(servicer._pngs) == 0


def test_decoded_pngs_decode_the_same_bytes_once_and_share_a_read_only_array() -> None:
    first, second = _frames()[:2]
    data = images.png_bytes(first)
    pngs = images.DecodedPngs(max_bytes=2 * (first.nbytes + len(data)) + 2_000)  # room for two
    a = pngs.decode(data)
    b = pngs.decode(bytes(bytearray(data)))  # equal bytes, another object: still a hit
    assert a is b and (pngs.hits, pngs.misses) == (1, 1)
    assert np.array_equal(a, first) and not a.flags.writeable
    other = pngs.decode(images.png_bytes(second))
    assert other is not a and np.array_equal(other, second)
    pngs.decode(images.png_bytes(first[::-1].copy()))  # a third file: the least recent goes
    assert len(pngs) == 2
    pngs.decode(images.png_bytes(second))  # still kept (it was used after `first`)
    assert pngs.hits == 2
    assert pngs.decode(data) is not a  # `first` was evicted: decoded afresh, same pixels
    assert np.array_equal(pngs.decode(data), first)
    assert pngs.bytes <= pngs.max_bytes
    tiny = images.DecodedPngs(max_bytes=first.nbytes // 2)  # a frame larger than the cache
    assert tiny.decode(data) is not tiny.decode(data) and len(tiny) == tiny.bytes == 0


def test_decoded_pngs_off_damaged_files_and_pillow_arrays() -> None:
    frame = _frames()[0]
    data = images.png_bytes(frame)
    off = images.DecodedPngs(max_bytes=0)
    assert off.decode(data) is not off.decode(data) and len(off) == 0
    pngs = images.DecodedPngs()
    with pytest.raises(images.ImageDecodeError):
        pngs.decode(data[: len(data) // 2])
    assert len(pngs) == 0  # nothing kept for a file that did not decode
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG", optimize=True)  # filtered rows: Pillow decodes
    array = pngs.decode(buffer.getvalue())
    assert np.array_equal(array, frame) and not array.flags.writeable
    assert pngs.decode(buffer.getvalue()) is array


@pytest.mark.parametrize("batched", [False, True])
def test_a_client_decodes_each_frame_the_server_sends_again_once(batched: bool) -> None:
    from visact.env_server.server import ServerConfig, start_server

    running = start_server(ServerConfig(host="127.0.0.1", port=0, log_format="text"))
    try:
        with client.EnvClient(f"127.0.0.1:{running.port}") as env_client:
            sid = env_client.create_session(encoding="png")
            env = games.make("numberline")
            seen: list[np.ndarray] = []
            for _ in range(3):  # the same seed thrice: the same frames come back
                env.reset(seed=3)
                if batched:
                    result = env_client.batch([client.ResetCall(sid, seed=3)])[0]
                else:
                    result = env_client.reset(sid, seed=3)
                assert not isinstance(result, client.EnvCallError)
                seen.append(result.observation.image)
                for action in ("+", "+", "-"):
                    env.step(action)
                    if batched:
                        stepped = env_client.batch([client.StepCall(sid, action)])[0]
                    else:
                        stepped = env_client.step(sid, action)
                    assert isinstance(stepped, client.StepResult)
                    assert np.array_equal(stepped.observation.image, env.render())
                    seen.append(stepped.observation.image)
            assert env_client.pngs.misses == len({id(a) for a in seen}) <= 4
            assert env_client.pngs.hits == len(seen) - env_client.pngs.misses >= 8
            assert seen[0] is seen[4] is seen[8]  # the first frame of each episode: one array
    finally:
        running.drain(grace=0)
