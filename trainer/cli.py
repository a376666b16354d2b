"""trainer: the central learner.

trainer serve [--model tiny] [--port 50061] [--steps-per-update 512] [--resume DIR] ...
trainer sft --data demos.jsonl [--model tiny] [--out DIR] ...
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from visact.configcli import parse_config
from visact.logs import setup_logging

COMMANDS = ("serve", "sft")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        print(f"trainer: give a command: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    command = args.pop(0)
    if command == "serve":
        from visact.trainer.config import TrainerConfig
        from visact.trainer.serve import serve

        config = parse_config(
            TrainerConfig, args, prog="trainer serve", description="the central PPO learner"
        )
        setup_logging(config.run.log_format, config.run.log_level)
        return serve(config)
    from visact.trainer.sft import run_sft
    from visact.trainer.sft_config import SFTConfig

    sft_config = parse_config(SFTConfig, args, prog="trainer sft", description="supervised warm start")
    setup_logging(sft_config.log_format, sft_config.log_level)
    return run_sft(sft_config)


if __name__ == "__main__":
    sys.exit(main())
