"""Run benchmark scenarios: ``python -m bench [SCENARIO ...] [OPTIONS]``.

Scenario names come first; everything from the first argument that starts with ``-``
on is handed to the scenarios (e.g. ``python -m bench core --quick``, ``python -m bench
fanout latency --no-peers``, ``python -m bench filters patterns --quick``). With no
scenario, ``core`` runs. An unknown scenario exits with status 2. ``core`` is the
in-process micro benchmark (:mod:`bench.bench_core`); the others run end to end against
a server process in one run (:mod:`bench.runner`), so one report covers them all;
``python -m bench fanout --help`` lists their options.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Final

from bench import bench_core, runner, soak, tls
from bench.scenarios import NAMES

#: Scenario name -> ``main(names, argv)``, which returns a process exit status; scenarios
#: sharing a ``main`` run together, in one call.
SCENARIOS: Final[dict[str, Callable[[Sequence[str], Sequence[str]], int]]] = {
    "core": lambda names, argv: bench_core.main(argv),
    "soak": lambda names, argv: soak.main(argv),
    "tls": tls.main,
    **dict.fromkeys(NAMES, runner.main),
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
    groups: dict[Callable[[Sequence[str], Sequence[str]], int], list[str]] = {}
    for name in dict.fromkeys(names or DEFAULT_SCENARIOS):
        groups.setdefault(SCENARIOS[name], []).append(name)
    for run, group in groups.items():
        status = max(status, run(group, options))
    return status


if __name__ == "__main__":
    sys.exit(main())
