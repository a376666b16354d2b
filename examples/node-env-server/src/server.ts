/**
 * The process: `node dist/server.js --port 0 --ready-file F`.
 *
 * Serves visact.env.v1.Environment (the game "lights") from the repository's .proto, loaded at run
 * time, plus gRPC health (grpc.health.v1) and reflection. Writes the bound port to --ready-file once
 * serving. On SIGTERM/SIGINT it drains: health turns NOT_SERVING, new calls are refused, running calls
 * get --grace seconds, then the process exits 0.
 */
import { renameSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation } from "grpc-health-check";
import { IMAGE_HEIGHT, IMAGE_WIDTH } from "./lights";
import { log, setLogLevel } from "./log";
import { EnvironmentService, type ServiceLimits } from "./service";
import { SERVICE_NAME, loadEnvProto } from "./wire";

export interface ServerConfig extends ServiceLimits {
  host: string;
  port: number;
  readyFile?: string;
  graceSeconds: number;
  keepaliveSeconds: number;
  token?: string;
}

export const DEFAULTS: ServerConfig = {
  host: "0.0.0.0",
  port: 50051,
  maxSessions: 1024,
  idleTimeoutSeconds: 300,
  maxMessageBytes: 64 * 1024 * 1024,
  maxBatchItems: 1024,
  graceSeconds: 10,
  keepaliveSeconds: 30,
};

export interface RunningServer {
  server: grpc.Server;
  port: number;
  service: EnvironmentService;
  health: HealthImplementation;
  /** Stop taking calls, give running ones `graceSeconds`, free every session. */
  drain(graceSeconds?: number): Promise<void>;
}

/** Builds and starts the server; resolves once it listens (port 0 gets a free port). */
export async function startServer(config: ServerConfig): Promise<RunningServer> {
  const packageDefinition = loadEnvProto();
  const proto = grpc.loadPackageDefinition(packageDefinition) as unknown as {
    visact: { env: { v1: { Environment: grpc.ServiceClientConstructor } } };
  };
  const service = new EnvironmentService(config);
  const server = new grpc.Server({
    "grpc.max_receive_message_length": config.maxMessageBytes,
    "grpc.max_send_message_length": config.maxMessageBytes,
    "grpc.keepalive_time_ms": Math.round(config.keepaliveSeconds * 1000),
    "grpc.keepalive_timeout_ms": 10_000,
    "grpc.keepalive_permit_without_calls": 1,
  });
  server.addService(proto.visact.env.v1.Environment.service, service.grpcHandlers(config.token));
  // Health is exempt from the token so that probes, which send no metadata, can check liveness.
  const health = new HealthImplementation({ "": "NOT_SERVING", [SERVICE_NAME]: "NOT_SERVING" });
  health.addToServer(server);
  new ReflectionService(packageDefinition).addToServer(server);

  const address = `${config.host.includes(":") && !config.host.startsWith("[") ? `[${config.host}]` : config.host}:${config.port}`;
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, bound) =>
      err ? reject(new Error(`could not bind ${address}: ${err.message}`)) : resolve(bound),
    ),
  );
  health.setStatus("", "SERVING");
  health.setStatus(SERVICE_NAME, "SERVING");
  service.sessions.startReaper();

  let drained: Promise<void> | undefined;
  const drain = (graceSeconds = config.graceSeconds): Promise<void> => {
    drained ??= new Promise<void>((resolve) => {
      health.setStatus("", "NOT_SERVING");
      health.setStatus(SERVICE_NAME, "NOT_SERVING");
      service.sessions.stopReaper();
      const force = setTimeout(() => server.forceShutdown(), graceSeconds * 1000);
      server.tryShutdown(() => {
        clearTimeout(force);
        service.sessions.closeAll();
        resolve();
      });
    });
    return drained;
  };
  return { server, port, service, health, drain };
}

// ---------------------------------------------------------------------------------- command line
const USAGE = `usage: node dist/server.js [options]

Serves the visact environment "lights" over gRPC (visact.env.v1.Environment).

  --host HOST             address to bind (default ${DEFAULTS.host}; "::" for IPv6)
  --port N                port to bind; 0 picks a free one (default ${DEFAULTS.port})
  --ready-file PATH       write the bound port here once serving (for scripts)
  --max-sessions N        sessions held at once; 0: no limit (default ${DEFAULTS.maxSessions})
  --idle-timeout S        close sessions idle this many seconds; 0: never (default ${DEFAULTS.idleTimeoutSeconds})
  --max-batch-items N     items allowed in one BatchStep (default ${DEFAULTS.maxBatchItems})
  --max-message-mb MB     largest message in or out, MiB (default ${DEFAULTS.maxMessageBytes / 1024 / 1024})
  --grace S               seconds running calls get on SIGTERM (default ${DEFAULTS.graceSeconds})
  --token TOKEN           require 'authorization: Bearer TOKEN' on every call (also $VISACT_TOKEN)
  --log-level LEVEL       debug, info, warning, error (default info)
  -h, --help              show this and exit
`;

class UsageError extends Error {}

/** An upper bound of one serialized Reset/Step result: a RAW_RGB image plus text, actions, expert, info. */
const RESULT_BYTES_BOUND = IMAGE_HEIGHT * IMAGE_WIDTH * 3 + 8 * 1024;

function number(name: string, text: string | undefined, fallback: number, opts: { integer?: boolean; max?: number } = {}): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (text.trim() === "" || !Number.isFinite(value) || value < 0 || (opts.integer && !Number.isInteger(value))) {
    throw new UsageError(`--${name} must be a non-negative ${opts.integer ? "integer" : "number"}, got ${JSON.stringify(text)}`);
  }
  if (opts.max !== undefined && value > opts.max) throw new UsageError(`--${name} must be at most ${opts.max}, got ${value}`);
  return value;
}

export function parseConfig(argv: string[]): ServerConfig | "help" {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        host: { type: "string" },
        port: { type: "string" },
        "ready-file": { type: "string" },
        "max-sessions": { type: "string" },
        "idle-timeout": { type: "string" },
        "max-batch-items": { type: "string" },
        "max-message-mb": { type: "string" },
        grace: { type: "string" },
        token: { type: "string" },
        "log-level": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }).values;
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (parsed.help) return "help";
  if (parsed["log-level"]) setLogLevel(parsed["log-level"]);
  const maxMessageMb = number("max-message-mb", parsed["max-message-mb"], DEFAULTS.maxMessageBytes / 1024 / 1024, { max: 2047 });
  if (maxMessageMb <= 0) throw new UsageError("--max-message-mb must be positive");
  const maxMessageBytes = Math.floor(maxMessageMb * 1024 * 1024);
  const maxBatchItems = number("max-batch-items", parsed["max-batch-items"], DEFAULTS.maxBatchItems, { integer: true });
  // Every response must fit: a response too large to send fails after the session has changed.
  if (Math.max(1, maxBatchItems) * RESULT_BYTES_BOUND > maxMessageBytes) {
    throw new UsageError(
      `--max-message-mb ${maxMessageMb} cannot carry a BatchStep response of --max-batch-items ${maxBatchItems} ` +
        `observations (up to ${RESULT_BYTES_BOUND} bytes each); raise --max-message-mb or lower --max-batch-items`,
    );
  }
  const token = parsed.token ?? (process.env.VISACT_TOKEN || undefined);
  if (token === "") throw new UsageError("--token is empty; an empty token would accept anyone");
  return {
    host: parsed.host ?? DEFAULTS.host,
    port: number("port", parsed.port, DEFAULTS.port, { integer: true, max: 65535 }),
    readyFile: parsed["ready-file"],
    maxSessions: number("max-sessions", parsed["max-sessions"], DEFAULTS.maxSessions, { integer: true, max: 2 ** 31 - 1 }),
    idleTimeoutSeconds: number("idle-timeout", parsed["idle-timeout"], DEFAULTS.idleTimeoutSeconds),
    maxBatchItems,
    maxMessageBytes,
    graceSeconds: number("grace", parsed.grace, DEFAULTS.graceSeconds),
    keepaliveSeconds: DEFAULTS.keepaliveSeconds,
    token,
  };
}

/** Writes `text` to `path` so that a reader never sees a partial file. */
function writeAtomically(path: string, text: string): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

export async function main(argv: string[]): Promise<number> {
  let config: ServerConfig | "help";
  try {
    config = parseConfig(argv);
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (config === "help") {
    process.stdout.write(USAGE);
    return 0;
  }
  let running: RunningServer;
  try {
    running = await startServer(config);
  } catch (err) {
    log("error", `cannot start: ${(err as Error).message}`);
    return 2;
  }
  const { spec } = running.service;
  log("info", "serving", {
    env: spec.name,
    port: running.port,
    max_sessions: config.maxSessions,
    idle_timeout: config.idleTimeoutSeconds,
    token: config.token !== undefined,
  });
  if (config.readyFile) writeAtomically(config.readyFile, `${running.port}\n`);

  const graceSeconds = config.graceSeconds;
  return new Promise<number>((resolve) => {
    let signals = 0;
    const onSignal = (signal: NodeJS.Signals) => {
      signals += 1;
      if (signals > 1) {
        log("warning", "second signal: stopping now", { signal });
        running.server.forceShutdown();
        resolve(0);
        return;
      }
      log("info", "draining", { signal, grace: graceSeconds });
      void running.drain(graceSeconds).then(() => {
        log("info", "stopped", { sessions_reaped: running.service.sessions.reapedTotal });
        resolve(0);
      });
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
  });
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      log("error", "crashed", { error: String((err as Error)?.stack ?? err) });
      process.exit(1);
    },
  );
}
