"""Child processes that do not outlive the process that started them.

``tied_to_this_process(argv)`` wraps a command so that, on Linux, the child gets SIGTERM when
its parent dies, even by SIGKILL: a tiny ``python -I -S`` launcher sets ``PR_SET_PDEATHSIG`` with
``prctl`` and then ``exec``s the command (same pid, same environment; the setting survives the
exec). SIGTERM, not SIGKILL, so that a child with children of its own (``torchrun``, whose
workers run in sessions of their own) stops them on its way out; visact's servers, trainer and
agents exit on SIGTERM. If the parent died before the launcher got that far, the launcher exits
with 143 instead of running the command. Elsewhere the command runs unwrapped.

The launcher, not ``preexec_fn``: code run between fork and exec in a process with threads (a
gRPC server, pytest's) can deadlock. Linux signals the child when the *thread* that started it
ends: start such children from a thread that lives as long as they should (the main thread).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

#: Run as ``python -I -S -c LAUNCHER <parent pid> <command...>``.
LAUNCHER = """\
import ctypes, os, signal, sys
PR_SET_PDEATHSIG = 1
ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
if os.getppid() != int(sys.argv[1]):
    sys.exit(128 + signal.SIGTERM)
os.execvp(sys.argv[2], sys.argv[2:])
"""


def tied_to_this_process(argv: Sequence[str]) -> list[str]:
    """``argv`` wrapped so that the child gets SIGTERM when this process dies (Linux; elsewhere
    ``argv`` unchanged)."""
    if not sys.platform.startswith("linux"):
        return list(argv)
    return [sys.executable, "-I", "-S", "-c", LAUNCHER, str(os.getpid()), *argv]
