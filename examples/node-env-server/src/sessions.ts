/**
 * Sessions: one game instance and one episode each, at most `maxSessions` at once, closed by the
 * reaper when idle longer than `idleTimeoutSeconds`. Node runs every call to completion on one thread,
 * so a session never sees two calls at once and needs no lock.
 */
import { randomBytes } from "node:crypto";
import { notFound, resourceExhausted, shorten } from "./errors";
import { Lights } from "./lights";
import type { ImageEncodingName } from "./wire";

export type EpisodeState = "needs_reset" | "running" | "ended";

export interface Session {
  readonly id: string;
  readonly game: Lights;
  readonly encoding: ImageEncodingName;
  readonly wantExpert: boolean;
  readonly label: string;
  state: EpisodeState;
  /** why the episode ended ("terminated", "truncated"), for error messages */
  endReason: string;
  /** episodes started in this session */
  episode: number;
  /** steps taken in the current episode */
  episodeStep: number;
  lastUsed: number;
}

/** How many ids of closed and reaped sessions are remembered, to say why an id is unknown. */
const REMEMBERED_GONE = 4096;

export class SessionStore {
  private readonly sessions = new Map<string, Session>();
  private readonly gone = new Map<string, string>();
  private reaper: NodeJS.Timeout | undefined;
  reapedTotal = 0;

  constructor(
    readonly maxSessions: number,
    readonly idleTimeoutSeconds: number,
    private readonly clock: () => number = () => performance.now() / 1000,
    private readonly onReap: (session: Session) => void = () => {},
  ) {}

  get size(): number {
    return this.sessions.size;
  }

  create(encoding: ImageEncodingName, wantExpert: boolean, label: string): Session {
    if (this.maxSessions > 0 && this.sessions.size >= this.maxSessions) {
      throw resourceExhausted(
        `the server holds its maximum of ${this.maxSessions} sessions; close sessions you no longer use ` +
          "(CloseSession), wait for idle ones to be reaped, or start the server with a larger --max-sessions",
      );
    }
    let id: string;
    do id = randomBytes(12).toString("hex");
    while (this.sessions.has(id));
    const session: Session = {
      id,
      game: new Lights(),
      encoding,
      wantExpert,
      label,
      state: "needs_reset",
      endReason: "",
      episode: 0,
      episodeStep: 0,
      lastUsed: this.clock(),
    };
    this.sessions.set(id, session);
    return session;
  }

  /** The session with this id, marked as used now; NOT_FOUND when there is none. */
  use(id: string): Session {
    const session = this.sessions.get(id);
    if (!session) throw notFound(this.unknownMessage(id));
    session.lastUsed = this.clock();
    return session;
  }

  close(id: string): void {
    if (!this.sessions.delete(id)) throw notFound(this.unknownMessage(id));
    this.remember(id, "was closed by CloseSession");
  }

  closeAll(): void {
    this.sessions.clear();
  }

  /** Closes the sessions idle longer than the timeout; returns how many. */
  reapIdle(): number {
    if (!(this.idleTimeoutSeconds > 0)) return 0;
    const deadline = this.clock() - this.idleTimeoutSeconds;
    let reaped = 0;
    for (const [id, session] of this.sessions) {
      if (session.lastUsed < deadline) {
        this.sessions.delete(id);
        this.remember(id, `was closed by the server after ${this.idleTimeoutSeconds} s without calls`);
        this.onReap(session);
        reaped++;
      }
    }
    this.reapedTotal += reaped;
    return reaped;
  }

  startReaper(): void {
    if (!(this.idleTimeoutSeconds > 0) || this.reaper) return;
    const periodMs = Math.min(Math.max(this.idleTimeoutSeconds / 4, 0.05), 5) * 1000;
    this.reaper = setInterval(() => this.reapIdle(), periodMs);
    this.reaper.unref();
  }

  stopReaper(): void {
    if (this.reaper) clearInterval(this.reaper);
    this.reaper = undefined;
  }

  private remember(id: string, why: string): void {
    this.gone.set(id, why);
    if (this.gone.size > REMEMBERED_GONE) {
      const oldest = this.gone.keys().next().value;
      if (oldest !== undefined) this.gone.delete(oldest);
    }
  }

  private unknownMessage(id: string): string {
    if (!id) return "no session_id given; call CreateSession first and pass its session_id";
    const why = this.gone.get(id);
    if (why) return `session ${JSON.stringify(id)} ${why}; call CreateSession for a new one`;
    return (
      `unknown session ${JSON.stringify(shorten(id))}: it was never created on this server (or was closed or ` +
      "reaped long ago, or the server restarted); call CreateSession for a new one"
    );
  }
}
