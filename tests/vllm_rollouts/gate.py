"""The vLLM tests run in the venv ``deploy/vllm_cpu_venv.py`` builds (docs/models.md has the command).

Each test module calls ``require_vllm()`` first. Where vLLM is not installed (the project's own
venv) its tests are skipped, unless ``VISACT_VLLM_TESTS=1`` says they must run: then a missing
vLLM is an error, never a skip.
"""

from __future__ import annotations

import importlib.util
import os

import pytest


def require_vllm() -> None:
    spec = importlib.util.find_spec("vllm")
    if spec is None or spec.origin is None:  # None: a directory named vllm on sys.path, not vLLM
        if os.environ.get("VISACT_VLLM_TESTS") == "1":
            raise RuntimeError(
                "VISACT_VLLM_TESTS=1 but vllm is not importable here; run the tests with the python of "
                "`python3 deploy/vllm_cpu_venv.py`"
            )
        pytest.skip("vLLM is not installed here (see docs/models.md)", allow_module_level=True)
    # Small and polite on a shared CPU: 1 GiB of KV cache, no pinning of threads to cores.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
