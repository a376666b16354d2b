/**
 * The server's one error type: a gRPC status code (as its number) and a message that says what was
 * expected, what came and how to fix it. Unary calls fail with it; BatchStep reports it per item.
 */

/** The gRPC status codes this server uses (numbers from the gRPC spec). */
export const Code = {
  INVALID_ARGUMENT: 3,
  NOT_FOUND: 5,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  INTERNAL: 13,
  UNAUTHENTICATED: 16,
} as const;

export type CodeNumber = (typeof Code)[keyof typeof Code];

export class EnvError extends Error {
  constructor(
    readonly code: CodeNumber,
    message: string,
  ) {
    super(message);
    this.name = "EnvError";
  }
}

export const invalidArgument = (message: string) => new EnvError(Code.INVALID_ARGUMENT, message);
export const notFound = (message: string) => new EnvError(Code.NOT_FOUND, message);
export const failedPrecondition = (message: string) => new EnvError(Code.FAILED_PRECONDITION, message);
export const resourceExhausted = (message: string) => new EnvError(Code.RESOURCE_EXHAUSTED, message);

/** `text` cut to `max` characters, for echoing client input in messages. */
export function shorten(text: string, max = 80): string {
  return text.length <= max ? text : `${text.slice(0, max - 3)}...`;
}
