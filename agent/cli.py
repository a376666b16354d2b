"""agent-client: turn a VLM into an agent of any visact environment server.

    agent-client eval --server host:port --episodes 200 [--oracle] [--json out.json]
    agent-client [run] --server host:port [--server ...] --sessions 16 [--trainer host:port]

``eval`` plays held-out seeds and reports success (95% interval), return,
valid-action rate, CoT length and speed. ``run`` plays training episodes: with
``--trainer`` it ships them to the trainer and follows its weights, without it
it only logs what it does.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from visact.agent.config import AgentConfig
from visact.agent.runs import evaluate, play, train
from visact.configcli import parse_config
from visact.env_server.client import EnvCallError
from visact.logs import setup_logging
from visact.model.engines.base import EngineError

log = logging.getLogger("agent")

COMMANDS = ("run", "eval")


def run_eval(config: AgentConfig) -> int:
    summary = evaluate(config)
    print("\n".join(summary.lines()))
    if config.eval.json:
        config.eval.json.parent.mkdir(parents=True, exist_ok=True)
        config.eval.json.write_text(json.dumps(summary.to_dict(), indent=2))
        print(f"wrote {config.eval.json}")
    return 0


def run_agent(config: AgentConfig) -> int:
    """Play training episodes until SIGTERM/SIGINT; with --trainer, learn with it."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return train(config, stop) if config.servers.trainer else play(config, stop)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args.pop(0) if args and args[0] in COMMANDS else "run"
    config = parse_config(
        AgentConfig, args, prog=f"agent-client {command}", description=__doc__.splitlines()[0]
    )
    setup_logging(config.run.log_format, config.run.log_level)
    try:
        return run_eval(config) if command == "eval" else run_agent(config)
    except EnvCallError as exc:
        log.error("env server call failed: %s", exc)
        return 1
    except EngineError as exc:
        log.error("the %s engine cannot run this: %s", config.policy.engine, exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
