"""visact: the one-machine demo and the demonstrations writer.

visact demo  [--env numberline] ...     SFT then PPO on loopback, ending with a plot and a summary
visact demos --env numberline -o demos.jsonl   expert demonstrations for `trainer sft`
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

COMMANDS = ("demo", "demos")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 2
    command = args.pop(0)
    if command == "demos":
        from visact.orchestration.demos import main as demos_main

        return demos_main(args)
    from visact.orchestration.demo import main as demo_main

    return demo_main(args)


if __name__ == "__main__":
    sys.exit(main())
