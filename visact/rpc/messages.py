"""Status messages that reach the client whatever the client sent.

A status message travels in the call's trailers, percent-encoded (a non-ASCII byte takes three),
and gRPC drops trailers over its metadata limit (8 KiB soft, 16 KiB hard): the client then sees
RESOURCE_EXHAUSTED ("received metadata size exceeds ... limit") instead of the code the server
meant. So a message never echoes client input at length (:func:`shown`), and every message is
cut to :data:`MAX_MESSAGE_BYTES` of UTF-8 (:func:`bounded`): at most ~6 KB on the wire.
"""

from __future__ import annotations

#: the most UTF-8 bytes of a status message
MAX_MESSAGE_BYTES = 2000
#: the most characters of one client-given value shown in a message
SHOWN_CHARS = 80


def bounded(message: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """``message`` cut to ``limit`` UTF-8 bytes (on a character boundary), marked when cut."""
    data = message.encode("utf-8", "replace")
    if len(data) <= limit:
        return message
    return data[:limit].decode("utf-8", "ignore") + "... (message cut)"


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)``, cut to ``limit`` characters: a client-given value inside a message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}...(+{len(text) - limit + 3} chars)"
