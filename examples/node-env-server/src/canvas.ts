/** A tiny RGB canvas over a raw buffer (height * width * 3 bytes, row-major): rectangles, discs, glyphs. */

export type RGB = readonly [number, number, number];

export class Canvas {
  readonly pixels: Uint8Array;

  constructor(
    readonly width: number,
    readonly height: number,
    background: RGB,
  ) {
    this.pixels = new Uint8Array(width * height * 3);
    this.fillRect(0, 0, width, height, background);
  }

  set(x: number, y: number, color: RGB): void {
    if (x < 0 || y < 0 || x >= this.width || y >= this.height) return;
    const i = (y * this.width + x) * 3;
    this.pixels[i] = color[0];
    this.pixels[i + 1] = color[1];
    this.pixels[i + 2] = color[2];
  }

  fillRect(x0: number, y0: number, w: number, h: number, color: RGB): void {
    for (let y = y0; y < y0 + h; y++) for (let x = x0; x < x0 + w; x++) this.set(x, y, color);
  }

  /** A filled disc centred between pixels (cx, cy are pixel-edge coordinates). */
  fillDisc(cx: number, cy: number, radius: number, color: RGB): void {
    const r2 = radius * radius;
    for (let y = Math.floor(cy - radius); y <= Math.ceil(cy + radius); y++) {
      for (let x = Math.floor(cx - radius); x <= Math.ceil(cx + radius); x++) {
        const dx = x + 0.5 - cx;
        const dy = y + 0.5 - cy;
        if (dx * dx + dy * dy <= r2) this.set(x, y, color);
      }
    }
  }

  /** One glyph of FONT at (x, y), each font pixel drawn as a scale x scale square. */
  drawGlyph(ch: string, x: number, y: number, scale: number, color: RGB): void {
    const rows = FONT[ch];
    if (!rows) throw new RangeError(`no glyph for ${JSON.stringify(ch)}`);
    rows.forEach((row, gy) => {
      for (let gx = 0; gx < row.length; gx++) {
        if (row[gx] === "#") this.fillRect(x + gx * scale, y + gy * scale, scale, scale, color);
      }
    });
  }
}

/** A 3x5 pixel font with just the characters the game draws. */
const FONT: Record<string, readonly string[]> = {
  A: [".#.", "#.#", "###", "#.#", "#.#"],
  B: ["##.", "#.#", "##.", "#.#", "##."],
  C: [".##", "#..", "#..", "#..", ".##"],
  "1": [".#.", "##.", ".#.", ".#.", "###"],
  "2": ["##.", "..#", ".#.", "#..", "###"],
  "3": ["##.", "..#", ".#.", "..#", "##."],
};
