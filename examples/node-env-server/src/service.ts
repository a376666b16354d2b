/**
 * The six RPCs of visact.env.v1.Environment over the game "lights". Each call is a plain method that
 * returns a response message or throws an EnvError; `grpcHandlers` maps those to gRPC status codes
 * once, and BatchStep runs the very same methods per item and reports errors in its results.
 */
import { randomInt, timingSafeEqual } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { Code, EnvError, failedPrecondition, invalidArgument, shorten } from "./errors";
import {
  DESCRIPTION,
  FACT_KEYS,
  IMAGE_HEIGHT,
  IMAGE_WIDTH,
  LAMPS,
  MAX_EPISODE_STEPS,
  NAME,
  parseOptions,
} from "./lights";
import { log } from "./log";
import { encodePng } from "./png";
import { type Session, SessionStore } from "./sessions";
import {
  type BatchItem,
  type BatchResult,
  type BatchStepRequest,
  type BatchStepResponse,
  type CloseSessionRequest,
  type CreateSessionRequest,
  type CreateSessionResponse,
  type DescribeResponse,
  type EnvironmentSpec,
  type ImageEncodingName,
  type Observation,
  PNG,
  PROTOCOL_VERSION,
  RAW_RGB,
  type ResetRequest,
  type ResetResponse,
  type StepRequest,
  type StepResponse,
  fromStruct,
  toStruct,
} from "./wire";

export interface ServiceLimits {
  /** sessions held at once (0: no limit) */
  maxSessions: number;
  /** close sessions idle this long, in seconds (0: never) */
  idleTimeoutSeconds: number;
  /** largest message in or out, in bytes */
  maxMessageBytes: number;
  /** items allowed in one BatchStep */
  maxBatchItems: number;
}

const INT64_MIN = -(1n << 63n);
const INT64_MAX = (1n << 63n) - 1n;

export class EnvironmentService {
  readonly spec: EnvironmentSpec;
  readonly sessions: SessionStore;

  constructor(readonly limits: ServiceLimits) {
    this.sessions = new SessionStore(limits.maxSessions, limits.idleTimeoutSeconds, undefined, (s) =>
      log("info", "session reaped", { session: s.id, label: s.label }),
    );
    this.spec = {
      name: NAME,
      protocol_version: PROTOCOL_VERSION,
      image_height: IMAGE_HEIGHT,
      image_width: IMAGE_WIDTH,
      image_channels: 3,
      image_encodings: [RAW_RGB, PNG],
      action_space: { vocabulary: [...LAMPS], dynamic: false },
      max_episode_steps: MAX_EPISODE_STEPS,
      capabilities: ["batch_step", "png", "seeded_reset", "expert", "reset_options"],
      fact_keys: [...FACT_KEYS],
      max_sessions: limits.maxSessions,
      session_idle_timeout_seconds: limits.idleTimeoutSeconds,
      max_message_bytes: String(limits.maxMessageBytes),
      description: DESCRIPTION,
    };
  }

  // ---------------------------------------------------------------------------------- the calls
  describe(): DescribeResponse {
    return { spec: this.spec };
  }

  createSession(request: CreateSessionRequest): CreateSessionResponse {
    const asked = request.image_encoding;
    let encoding: ImageEncodingName;
    if (asked === "IMAGE_ENCODING_UNSPECIFIED" || asked === RAW_RGB || asked === 0 || asked === 1) encoding = RAW_RGB;
    else if (asked === PNG || asked === 2) encoding = PNG;
    else {
      throw invalidArgument(
        `image_encoding ${JSON.stringify(asked)} is not offered by this server; offered: ` +
          `${this.spec.image_encodings.join(", ")} (or IMAGE_ENCODING_UNSPECIFIED for RAW_RGB)`,
      );
    }
    const label = (request.client_label ?? "").slice(0, 200);
    const session = this.sessions.create(encoding, Boolean(request.want_expert), label);
    log("debug", "session created", { session: session.id, label, encoding, want_expert: session.wantExpert });
    return { session_id: session.id };
  }

  reset(request: ResetRequest): ResetResponse {
    const session = this.sessions.use(request.session_id ?? "");
    // Everything is checked before the session changes: a bad request leaves it as it was.
    const options = parseOptions(fromStruct(request.options));
    const seed = request.seed !== undefined && request.seed !== null ? parseSeed(request.seed) : BigInt(freshSeed());
    session.game.reset(seed, options);
    session.state = "running";
    session.endReason = "";
    session.episode += 1;
    session.episodeStep = 0;
    return { observation: this.observe(session), seed: seed.toString(), episode: String(session.episode) };
  }

  step(request: StepRequest): StepResponse {
    const session = this.sessions.use(request.session_id ?? "");
    if (session.state === "needs_reset") {
      throw failedPrecondition(`session ${JSON.stringify(session.id)} has no episode yet; call Reset before Step`);
    }
    if (session.state === "ended") {
      throw failedPrecondition(
        `the episode of session ${JSON.stringify(session.id)} has ended (${session.endReason}); ` +
          "call Reset to start a new one",
      );
    }
    const action = request.action ?? "";
    const legal = this.legalActions(session);
    if (!legal.includes(action)) {
      throw invalidArgument(
        `action ${JSON.stringify(shorten(action))} is not legal now; expected one of ${legal.join(", ")} ` +
          "(exact, case-sensitive, no spaces)",
      );
    }
    const outcome = session.game.step(action);
    session.episodeStep += 1;
    let truncated = false;
    if (!outcome.terminated && MAX_EPISODE_STEPS > 0 && session.episodeStep >= MAX_EPISODE_STEPS) {
      truncated = true;
      outcome.info.success = false;
    }
    if (outcome.terminated || truncated) {
      session.state = "ended";
      session.endReason = outcome.terminated ? "terminated: every lamp is on" : `truncated after ${MAX_EPISODE_STEPS} steps`;
    }
    return {
      observation: this.observe(session),
      reward: outcome.reward,
      terminated: outcome.terminated,
      truncated,
      info: toStruct(outcome.info),
      episode_step: session.episodeStep,
    };
  }

  batchStep(request: BatchStepRequest): BatchStepResponse {
    const items = request.items ?? [];
    if (items.length > this.limits.maxBatchItems) {
      throw invalidArgument(
        `a batch may hold at most ${this.limits.maxBatchItems} items; got ${items.length}; split it into smaller batches`,
      );
    }
    return { results: items.map((item) => this.batchItem(item)) };
  }

  closeSession(request: CloseSessionRequest): Record<string, never> {
    this.sessions.close(request.session_id ?? "");
    return {};
  }

  // ---------------------------------------------------------------------------------- helpers
  private batchItem(item: BatchItem): BatchResult {
    try {
      if (item.call === "reset" && item.reset) return { reset: this.reset(item.reset) };
      if (item.call === "step" && item.step) return { step: this.step(item.step) };
      throw invalidArgument("batch item has neither 'reset' nor 'step' set; set exactly one");
    } catch (err) {
      if (err instanceof EnvError) return { error: { code: err.code, message: err.message } };
      log("error", "batch item failed", { error: String((err as Error)?.stack ?? err) });
      return { error: { code: Code.INTERNAL, message: `the environment failed: ${String(err)}` } };
    }
  }

  private legalActions(session: Session): string[] {
    // At the end of an episode no action is valid (Step answers FAILED_PRECONDITION), so none is listed.
    return session.state === "running" ? [...LAMPS] : [];
  }

  private observe(session: Session): Observation {
    const pixels = session.game.render();
    const data =
      session.encoding === PNG
        ? encodePng(pixels, IMAGE_WIDTH, IMAGE_HEIGHT)
        : Buffer.from(pixels.buffer, pixels.byteOffset, pixels.byteLength);
    const observation: Observation = {
      image: { data, encoding: session.encoding, height: IMAGE_HEIGHT, width: IMAGE_WIDTH, channels: 3 },
      task: session.game.taskText(),
      legal_actions: this.legalActions(session),
    };
    if (session.wantExpert && session.state === "running") {
      const move = session.game.expert();
      if (move) {
        observation.expert = {
          action: move.action,
          thoughts: move.thoughts,
          facts: move.facts.map(([key, value]) => ({ key, value })),
        };
      }
    }
    return observation;
  }

  // ---------------------------------------------------------------------------------- gRPC
  /** The service implementation for grpc.Server.addService; with `token`, calls need `authorization: Bearer <token>`. */
  grpcHandlers(token?: string): grpc.UntypedServiceImplementation {
    const unary =
      <Req, Resp>(name: string, fn: (request: Req) => Resp): grpc.handleUnaryCall<Req, Resp> =>
      (call, callback) => {
        try {
          if (token !== undefined) checkToken(call.metadata, token);
          callback(null, fn(call.request));
        } catch (err) {
          if (err instanceof EnvError) {
            log("debug", "call refused", { method: name, code: err.code, message: err.message });
            callback({ code: err.code, details: err.message });
          } else {
            log("error", "unexpected error", { method: name, error: String((err as Error)?.stack ?? err) });
            callback({ code: grpc.status.INTERNAL, details: `the environment raised ${String(err)}; see the server log` });
          }
        }
      };
    return {
      Describe: unary("Describe", () => this.describe()),
      CreateSession: unary("CreateSession", (r: CreateSessionRequest) => this.createSession(r)),
      Reset: unary("Reset", (r: ResetRequest) => this.reset(r)),
      Step: unary("Step", (r: StepRequest) => this.step(r)),
      BatchStep: unary("BatchStep", (r: BatchStepRequest) => this.batchStep(r)),
      CloseSession: unary("CloseSession", (r: CloseSessionRequest) => this.closeSession(r)),
    };
  }
}

function parseSeed(text: string | number): bigint {
  let seed: bigint;
  try {
    seed = BigInt(text);
  } catch {
    throw invalidArgument(`seed must be an int64, got ${JSON.stringify(text)}`);
  }
  if (seed < INT64_MIN || seed > INT64_MAX) throw invalidArgument(`seed must fit in an int64, got ${seed}`);
  return seed;
}

/** A seed the server picks when the request has none: uniform in [0, 2^31 - 1). */
function freshSeed(): number {
  return randomInt(0, 2 ** 31 - 1);
}

function checkToken(metadata: grpc.Metadata, token: string): void {
  const given = metadata.get("authorization")[0];
  const givenBytes = Buffer.from(typeof given === "string" ? given : (given ?? Buffer.alloc(0)));
  const expected = Buffer.from(`Bearer ${token}`);
  if (givenBytes.length === expected.length && timingSafeEqual(givenBytes, expected)) return;
  const reason = given === undefined ? "no 'authorization' metadata" : "a wrong token";
  throw new EnvError(
    Code.UNAUTHENTICATED,
    `this server requires a bearer token and the call carried ${reason}; send metadata 'authorization: Bearer <token>'`,
  );
}
