"""Benchmarks for trio-pubsub: ``python -m bench [SCENARIO ...] [OPTIONS]``.

Every scenario reports server CPU microseconds per delivery (DESIGN.md, "Hot-path
rules") and never passes or fails; results are written to ``bench/results/``.
"""
