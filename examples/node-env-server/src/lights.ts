/**
 * The game "lights": a 3x3 grid of lamps, some of them off. Each action names a lamp and toggles it;
 * the episode is won when every lamp is on. The lamps' states are only in the image, never in the
 * task text, so an agent has to read the picture.
 *
 * Pure game logic: no gRPC here. Invalid input raises EnvError (INVALID_ARGUMENT).
 */
import { Canvas, type RGB } from "./canvas";
import { invalidArgument, shorten } from "./errors";
import { SplitMix64 } from "./prng";

export const ROWS = ["A", "B", "C"] as const;
export const COLS = ["1", "2", "3"] as const;
/** The lamp names in reading order: A1 A2 A3 B1 ... C3. They are also the action strings. */
export const LAMPS: readonly string[] = ROWS.flatMap((r) => COLS.map((c) => r + c));

export const NAME = "lights";
export const IMAGE_WIDTH = 128;
export const IMAGE_HEIGHT = 128;
export const MAX_EPISODE_STEPS = 12;
export const FACT_KEYS = ["lamps off"] as const;
/** Reset options this game accepts (ResetRequest.options keys). */
export const OPTION_NAMES = ["off"] as const;
export const DESCRIPTION =
  "A 3x3 grid of lamps named A1..C3 (rows A-C top to bottom, columns 1-3 left to right). Each action " +
  "names a lamp and toggles it; the episode is won when every lamp is on. Lamp states are shown only in " +
  "the image. Reward: +1 on winning, -0.1 for switching a lit lamp off, 0 otherwise. Reset option: " +
  '{"off": N} starts with N (1..9) lamps off; without it the seed picks 1..6.';

const TASK =
  "Turn every lamp on. The image shows a 3x3 grid of lamps: a lit lamp is yellow, an unlit lamp is dark grey. " +
  "Rows are A, B, C from top to bottom and columns are 1, 2, 3 from left to right, so the top-left lamp is A1 " +
  "and the bottom-right lamp is C3. Each action is one lamp's name (e.g. B2) and toggles that lamp: off " +
  "becomes on and on becomes off.";

export interface Outcome {
  reward: number;
  /** Won: every lamp is on. */
  terminated: boolean;
  info: Record<string, unknown>;
}

export interface ExpertMove {
  action: string;
  thoughts: string;
  facts: Array<[string, string]>;
}

export interface ResetOptions {
  off?: number;
}

/** Checks ResetRequest.options (already plain JSON values); throws INVALID_ARGUMENT on any problem. */
export function parseOptions(options: Record<string, unknown>): ResetOptions {
  const unknown = Object.keys(options).filter((k) => !(OPTION_NAMES as readonly string[]).includes(k));
  if (unknown.length > 0) {
    throw invalidArgument(
      `unknown reset option(s) ${JSON.stringify(unknown.sort())}; ${NAME} accepts: ${OPTION_NAMES.join(", ")}`,
    );
  }
  const parsed: ResetOptions = {};
  if ("off" in options) {
    const off = options.off;
    if (typeof off !== "number" || !Number.isInteger(off) || off < 1 || off > LAMPS.length) {
      throw invalidArgument(
        `reset option "off" must be an integer 1..${LAMPS.length} (lamps off at the start), ` +
          `got ${shorten(JSON.stringify(off) ?? String(off))}`,
      );
    }
    parsed.off = off;
  }
  return parsed;
}

export class Lights {
  /** on[i] tells whether lamp LAMPS[i] is lit. */
  private on: boolean[] = LAMPS.map(() => true);

  /** Starts an episode: `seed` is any int64 (bigint); the same seed and options give the same episode. */
  reset(seed: bigint, options: ResetOptions): void {
    const rng = new SplitMix64(seed);
    const off = options.off ?? rng.intBetween(1, 6);
    const unlit = new Set(rng.sample(LAMPS, off));
    this.on = LAMPS.map((name) => !unlit.has(name));
  }

  /** Toggles the lamp `action` names. The caller has checked that `action` is in LAMPS. */
  step(action: string): Outcome {
    const i = LAMPS.indexOf(action);
    if (i < 0) throw invalidArgument(`action ${JSON.stringify(shorten(action))} is not a lamp; expected one of ${LAMPS.join(", ")}`);
    const wasOn = this.on[i];
    this.on[i] = !wasOn;
    const won = this.on.every(Boolean);
    const info: Record<string, unknown> = { lamp: action, lit: !wasOn, lamps_on: this.litCount() };
    if (won) info.success = true;
    return { reward: won ? 1.0 : wasOn ? -0.1 : 0.0, terminated: won, info };
  }

  litCount(): number {
    return this.on.filter(Boolean).length;
  }

  offLamps(): string[] {
    return LAMPS.filter((_, i) => !this.on[i]);
  }

  taskText(): string {
    return TASK;
  }

  /** The oracle: switch on the first unlit lamp in reading order. Undefined when all are lit. */
  expert(): ExpertMove | undefined {
    const off = this.offLamps();
    if (off.length === 0) return undefined;
    const [next, ...rest] = off;
    const thoughts =
      `The unlit (grey) lamps are ${off.join(", ")}. ` +
      `I switch on ${next}` +
      (rest.length ? `; then ${rest.join(", ")} will still be off.` : "; then every lamp is lit and I win.");
    return { action: next, thoughts, facts: [["lamps off", off.join(", ")]] };
  }

  /** The grid as RGB pixels: IMAGE_HEIGHT * IMAGE_WIDTH * 3 bytes, row-major. */
  render(): Uint8Array {
    const canvas = new Canvas(IMAGE_WIDTH, IMAGE_HEIGHT, BACKGROUND);
    const origin = 16; // label band on the top and left
    const cell = 36;
    COLS.forEach((label, c) => canvas.drawGlyph(label, origin + c * cell + cell / 2 - 3, 3, 2, LABEL));
    ROWS.forEach((label, r) => canvas.drawGlyph(label, 4, origin + r * cell + cell / 2 - 5, 2, LABEL));
    LAMPS.forEach((_, i) => {
      const x = origin + (i % 3) * cell;
      const y = origin + Math.floor(i / 3) * cell;
      canvas.fillRect(x + 1, y + 1, cell - 2, cell - 2, CELL_BORDER);
      canvas.fillRect(x + 2, y + 2, cell - 4, cell - 4, CELL);
      const cx = x + cell / 2;
      const cy = y + cell / 2;
      if (this.on[i]) {
        canvas.fillDisc(cx, cy, 14, GLOW);
        canvas.fillDisc(cx, cy, 12, LIT);
        canvas.fillDisc(cx - 3, cy - 3, 4, HIGHLIGHT);
      } else {
        canvas.fillDisc(cx, cy, 12, UNLIT_RIM);
        canvas.fillDisc(cx, cy, 10, UNLIT);
      }
    });
    return canvas.pixels;
  }
}

const BACKGROUND: RGB = [18, 18, 26];
const LABEL: RGB = [225, 225, 235];
const CELL_BORDER: RGB = [58, 58, 72];
const CELL: RGB = [30, 30, 40];
const GLOW: RGB = [140, 110, 30];
const LIT: RGB = [255, 208, 56];
const HIGHLIGHT: RGB = [255, 246, 200];
const UNLIT_RIM: RGB = [110, 110, 122];
const UNLIT: RGB = [62, 62, 72];
