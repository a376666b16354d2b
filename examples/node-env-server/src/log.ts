/** JSON-lines logging to stderr: {"ts", "level", "msg", ...fields}. */

const LEVELS = { debug: 10, info: 20, warning: 30, error: 40 } as const;
export type Level = keyof typeof LEVELS;

let threshold: number = LEVELS.info;

export function setLogLevel(level: string): void {
  const key = level.toLowerCase() as Level;
  if (!(key in LEVELS)) throw new Error(`--log-level must be one of ${Object.keys(LEVELS).join(", ")}, got ${level}`);
  threshold = LEVELS[key];
}

export function log(level: Level, msg: string, fields: Record<string, unknown> = {}): void {
  if (LEVELS[level] < threshold) return;
  process.stderr.write(
    `${JSON.stringify({ ts: new Date().toISOString(), level, logger: "node-env-server", msg, ...fields })}\n`,
  );
}
