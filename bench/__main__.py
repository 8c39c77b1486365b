"""Run benchmark scenarios: ``python -m bench [SCENARIO ...] [OPTIONS]``.

Scenario names come first; everything from the first argument that starts with
``-`` on is handed to every selected scenario (e.g. ``python -m bench core --quick``).
With no scenario, ``core`` runs. An unknown scenario exits with status 2.

To add a scenario, add a ``name -> main(argv) -> exit status`` entry to ``SCENARIOS``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Final

from bench import bench_core, bench_ws

#: Scenario name -> its ``main(argv)``, which returns a process exit status.
SCENARIOS: Final[dict[str, Callable[[Sequence[str]], int]]] = {
    "core": bench_core.main,
    "ws": bench_ws.main,
}
DEFAULT_SCENARIOS: Final = ("core",)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    split = next((i for i, arg in enumerate(args) if arg.startswith("-")), len(args))
    names, options = args[:split], args[split:]
    if not names and options and options[0] in ("-h", "--help"):
        print(__doc__)
        print("Available scenarios:", ", ".join(SCENARIOS))
        return 0
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        print(
            f"unknown scenario{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}; "
            f"available: {', '.join(SCENARIOS)}",
            file=sys.stderr,
        )
        return 2
    status = 0
    for name in names or DEFAULT_SCENARIOS:
        status = max(status, SCENARIOS[name](options))
    return status


if __name__ == "__main__":
    sys.exit(main())
