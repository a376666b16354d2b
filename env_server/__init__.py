"""visact's environment side: the Env contract, the generic gRPC server, the games, conformance.

Needs no torch and no transformers.
"""
