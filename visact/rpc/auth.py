"""TLS credentials and the bearer token's metadata, for every visact server and client.

With a token configured every call must carry ``authorization: Bearer <token>`` or gets
UNAUTHENTICATED (checked by ``visact.rpc``); the gRPC health service is exempt so that load
balancers and Kubernetes gRPC probes, which send no metadata, can check liveness.
"""

from __future__ import annotations

from pathlib import Path

import grpc


def server_credentials(
    cert: Path | None, key: Path | None, client_ca: Path | None = None
) -> grpc.ServerCredentials | None:
    """TLS credentials (mutual TLS when ``client_ca`` is given), or None for plaintext."""
    if cert is None or key is None:
        return None
    pair = [(key.read_bytes(), cert.read_bytes())]
    if client_ca is None:
        return grpc.ssl_server_credentials(pair)
    return grpc.ssl_server_credentials(
        pair, root_certificates=client_ca.read_bytes(), require_client_auth=True
    )


def channel_credentials(
    ca: Path | None, client_cert: Path | None = None, client_key: Path | None = None
) -> grpc.ChannelCredentials:
    """Client TLS credentials: trust ``ca`` (system roots if None), present a client cert for mTLS."""
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes() if ca else None,
        private_key=client_key.read_bytes() if client_key else None,
        certificate_chain=client_cert.read_bytes() if client_cert else None,
    )


def token_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The call metadata that carries ``token``."""
    return (("authorization", f"Bearer {token}"),) if token else ()
