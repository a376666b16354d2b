/** Unit tests of the parts without gRPC: `npm test` (node:test, no extra packages). */
import assert from "node:assert/strict";
import { test } from "node:test";
import { inflateSync } from "node:zlib";
import { IMAGE_HEIGHT, IMAGE_WIDTH, LAMPS, Lights, parseOptions } from "../lights";
import { crc32, encodePng } from "../png";
import { SplitMix64 } from "../prng";
import { fromStruct, toStruct } from "../wire";

test("SplitMix64 matches the reference values for seed 0", () => {
  // The first outputs of SplitMix64 seeded with 0 (from the reference C implementation).
  const rng = new SplitMix64(0n);
  assert.equal(rng.nextU64(), 0xe220a8397b1dcdafn);
  assert.equal(rng.nextU64(), 0x6e789e6aa1b965f4n);
  assert.equal(rng.nextU64(), 0x06c45d188009454fn);
});

test("SplitMix64 takes any int64 and is deterministic", () => {
  for (const seed of [0n, 1n, -1n, (1n << 63n) - 1n, -(1n << 63n)]) {
    const a = new SplitMix64(seed);
    const b = new SplitMix64(seed.toString());
    for (let i = 0; i < 5; i++) assert.equal(a.intBetween(1, 6), b.intBetween(1, 6));
  }
  assert.notDeepEqual(new SplitMix64(1n).sample(LAMPS, 9), new SplitMix64(2n).sample(LAMPS, 9));
});

test("crc32 of a known string", () => {
  assert.equal(crc32(Buffer.from("123456789")), 0xcbf43926);
});

test("encodePng writes a valid 8-bit RGB PNG of the pixels", () => {
  const w = 3;
  const h = 2;
  const rgb = Uint8Array.from({ length: w * h * 3 }, (_, i) => (i * 37) % 256);
  const png = encodePng(rgb, w, h);
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  assert.equal(png.toString("ascii", 12, 16), "IHDR");
  assert.equal(png.readUInt32BE(16), w);
  assert.equal(png.readUInt32BE(20), h);
  const idatLength = png.readUInt32BE(33);
  assert.equal(png.toString("ascii", 37, 41), "IDAT");
  const raw = inflateSync(png.subarray(41, 41 + idatLength));
  assert.equal(raw.length, h * (w * 3 + 1));
  assert.deepEqual([...raw.subarray(1, 1 + w * 3)], [...rgb.subarray(0, w * 3)]);
  assert.equal(png.toString("ascii", png.length - 8, png.length - 4), "IEND");
});

test("the same seed gives the same episode; the expert wins", () => {
  const a = new Lights();
  const b = new Lights();
  a.reset(42n, {});
  b.reset(42n, {});
  assert.deepEqual(a.render(), b.render());
  assert.equal(a.render().length, IMAGE_HEIGHT * IMAGE_WIDTH * 3);
  let steps = 0;
  for (;;) {
    const move = a.expert();
    assert.ok(move);
    const outcome = a.step(move.action);
    steps++;
    if (outcome.terminated) {
      assert.equal(outcome.reward, 1);
      assert.equal(outcome.info.success, true);
      break;
    }
  }
  assert.ok(steps <= 6);
  assert.equal(a.expert(), undefined);
});

test("reset options are checked", () => {
  assert.deepEqual(parseOptions({}), {});
  assert.deepEqual(parseOptions({ off: 9 }), { off: 9 });
  assert.throws(() => parseOptions({ off: 0 }), /integer 1..9/);
  assert.throws(() => parseOptions({ off: "3" }), /integer 1..9/);
  assert.throws(() => parseOptions({ colour: 1 }), /unknown reset option/);
  const game = new Lights();
  game.reset(5n, { off: 9 });
  assert.equal(game.litCount(), 0);
});

test("Struct round trip", () => {
  const values = { a: 1.5, b: true, c: "x", d: null, e: [1, "y"], f: { g: false } };
  assert.deepEqual(fromStruct(toStruct(values)), values);
});
