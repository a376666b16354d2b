"""The image codec: PNG files written without Pillow, read back by anyone; batches encode and
decode their PNG images on several threads and give what one-by-one calls give."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from env_server import client, games, images
from env_server.service import EnvironmentServicer
from visact.env.v1 import env_pb2 as pb


def _frames() -> list[np.ndarray]:
    frames = []
    for name in games.names():
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
