/**
 * The messages of proto/visact/env/v1/env.proto as @grpc/proto-loader hands them over, with the
 * loader options below: field names as in the .proto (keepCase), int64 as decimal strings (longs:
 * String, so no precision is lost), enums as their names (enums: String; a number the .proto does not
 * name arrives as that number), scalar defaults filled in (defaults: true; proto3 `optional` fields
 * stay undefined when unset), and a oneof's virtual field naming the member that is set (oneofs: true).
 *
 * google.protobuf.Struct is NOT mapped to a plain JSON object by the loader: it arrives and must be
 * sent as the message itself, {fields: {key: Value}}, where Value is {nullValue | numberValue |
 * stringValue | boolValue | structValue | listValue: {values: Value[]}}. toStruct/fromStruct convert.
 */
import * as path from "node:path";
import * as fs from "node:fs";
import * as protoLoader from "@grpc/proto-loader";

export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

export const SERVICE_NAME = "visact.env.v1.Environment";
export const PROTOCOL_VERSION = "v1";

/**
 * The repository's proto/ folder: $VISACT_PROTO_DIR, else ../../proto from this package
 * (dist/ and src/ both sit one level below the package root).
 */
export function protoRoot(): string {
  const fromEnv = process.env.VISACT_PROTO_DIR;
  if (fromEnv) return path.resolve(fromEnv);
  return path.resolve(__dirname, "..", "..", "..", "proto");
}

export const ENV_PROTO = "visact/env/v1/env.proto";

export function loadEnvProto(root = protoRoot()): protoLoader.PackageDefinition {
  const file = path.join(root, ENV_PROTO);
  if (!fs.existsSync(file)) {
    throw new Error(`the protocol file ${file} is missing; run from the visact repository or set VISACT_PROTO_DIR`);
  }
  return protoLoader.loadSync(ENV_PROTO, { ...LOADER_OPTIONS, includeDirs: [root] });
}

// ------------------------------------------------------------------------------------ enums
export type ImageEncodingName = "IMAGE_ENCODING_UNSPECIFIED" | "IMAGE_ENCODING_RAW_RGB" | "IMAGE_ENCODING_PNG";
export const RAW_RGB: ImageEncodingName = "IMAGE_ENCODING_RAW_RGB";
export const PNG: ImageEncodingName = "IMAGE_ENCODING_PNG";

// ------------------------------------------------------------------------------------ Struct
export interface Value {
  nullValue?: "NULL_VALUE" | number;
  numberValue?: number;
  stringValue?: string;
  boolValue?: boolean;
  structValue?: Struct;
  listValue?: { values?: Value[] };
  kind?: string;
}
export interface Struct {
  fields?: Record<string, Value>;
}

/** A plain JSON-like object as a google.protobuf.Struct message. Non-finite numbers become strings. */
export function toStruct(values: Record<string, unknown>): Struct {
  const fields: Record<string, Value> = {};
  for (const [k, v] of Object.entries(values)) fields[k] = toValue(v);
  return { fields };
}

function toValue(v: unknown): Value {
  if (v === null || v === undefined) return { nullValue: "NULL_VALUE" };
  if (typeof v === "boolean") return { boolValue: v };
  if (typeof v === "number") return Number.isFinite(v) ? { numberValue: v } : { stringValue: String(v) };
  if (typeof v === "bigint") return { numberValue: Number(v) };
  if (typeof v === "string") return { stringValue: v };
  if (Array.isArray(v)) return { listValue: { values: v.map(toValue) } };
  if (typeof v === "object") return { structValue: toStruct(v as Record<string, unknown>) };
  return { stringValue: String(v) };
}

/** A google.protobuf.Struct message as a plain object (numbers are doubles, as in JSON). */
export function fromStruct(struct: Struct | null | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(struct?.fields ?? {})) out[k] = fromValue(v);
  return out;
}

function fromValue(v: Value): unknown {
  // From the wire the oneof's virtual field `kind` names the member; built by hand, it may be absent.
  const kind =
    v.kind ?? (["numberValue", "stringValue", "boolValue", "structValue", "listValue"] as const).find((k) => v[k] != null);
  switch (kind) {
    case "numberValue":
      return v.numberValue;
    case "stringValue":
      return v.stringValue;
    case "boolValue":
      return v.boolValue;
    case "structValue":
      return fromStruct(v.structValue);
    case "listValue":
      return (v.listValue?.values ?? []).map(fromValue);
    default:
      return null; // nullValue, or no kind set
  }
}

// ------------------------------------------------------------------------------------ messages
export interface Image {
  data: Buffer;
  encoding: ImageEncodingName;
  height: number;
  width: number;
  channels: number;
}

export interface Fact {
  key: string;
  value: string;
}

export interface Expert {
  action: string;
  thoughts: string;
  facts: Fact[];
}

export interface Observation {
  image: Image;
  task: string;
  legal_actions: string[];
  expert?: Expert;
}

export interface EnvironmentSpec {
  name: string;
  protocol_version: string;
  image_height: number;
  image_width: number;
  image_channels: number;
  image_encodings: ImageEncodingName[];
  action_space: { vocabulary: string[]; dynamic: boolean };
  max_episode_steps: number;
  capabilities: string[];
  fact_keys: string[];
  max_sessions: number;
  session_idle_timeout_seconds: number;
  /** int64: a decimal string (or a safe integer) */
  max_message_bytes: string;
  description: string;
}

export interface DescribeResponse {
  spec: EnvironmentSpec;
}

export interface CreateSessionRequest {
  image_encoding: ImageEncodingName | number;
  want_expert: boolean;
  client_label: string;
}
export interface CreateSessionResponse {
  session_id: string;
}

export interface ResetRequest {
  session_id: string;
  /** int64 as a decimal string; undefined when unset (proto3 optional) */
  seed?: string;
  options: Struct | null;
}
export interface ResetResponse {
  observation: Observation;
  seed: string;
  episode: string;
}

export interface StepRequest {
  session_id: string;
  action: string;
}
export interface StepResponse {
  observation: Observation;
  reward: number;
  terminated: boolean;
  truncated: boolean;
  info: Struct;
  episode_step: number;
}

export interface BatchItem {
  reset?: ResetRequest | null;
  step?: StepRequest | null;
  /** the oneof's virtual field: "reset", "step", or undefined when neither is set */
  call?: "reset" | "step";
}
export interface BatchStepRequest {
  items: BatchItem[];
}
export interface ErrorMessage {
  code: number;
  message: string;
}
export type BatchResult = { reset: ResetResponse } | { step: StepResponse } | { error: ErrorMessage };
export interface BatchStepResponse {
  results: BatchResult[];
}

export interface CloseSessionRequest {
  session_id: string;
}
