"""Smoke test of ``bench/bench_core.py`` at a tiny size: exact counts, no timing assertions."""

from __future__ import annotations

from typing import Any

import pytest

from bench import bench_core
from bench.__main__ import main as bench_main
from pubsub._core.session import Session

ROW_KEYS = (
    "subscribers",
    "messages",
    "deliveries",
    "expected_deliveries",
    "events_received",
    "acks_received",
    "lost",
    "duplicated",
    "order_errors",
    "broker_dropped",
    "exact",
    "broker_cpu_s",
    "broker_wall_s",
    "broker_us_per_delivery",
    "deliveries_per_s",
    "baseline_us_per_delivery",
    "ratio",
    "paced",
)


@pytest.mark.parametrize(("full_check", "paced"), [(True, False), (False, False), (True, True)])
def test_core_counts_are_exact(full_check: bool, paced: bool) -> None:
    rows = bench_core.run_core(
        sizes=[1, 3], messages=50, full_check=full_check, paced=paced, warmup=False
    )
    assert [row["subscribers"] for row in rows] == [1, 3]
    for row in rows:
        assert set(ROW_KEYS) <= row.keys()
        subscribers = row["subscribers"]
        assert row["messages"] == 50
        assert row["events_received"] == row["deliveries"] == subscribers * 50
        assert row["expected_deliveries"] == subscribers * 50
        assert row["acks_received"] == 50
        assert row["lost"] == row["duplicated"] == row["order_errors"] == 0
        assert row["broker_dropped"] == 0
        assert not row["capped"] and not row["timed_out"]
        assert row["exact"]


def test_core_reports_a_duplicate(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks themselves work: a frame delivered twice makes the row inexact."""
    deliver = Session.deliver

    def deliver_twice(self: Session, frames: list[bytes], *args: Any, **kwargs: Any) -> int:
        return deliver(self, [frames[0], *frames], *args, **kwargs)

    monkeypatch.setattr(Session, "deliver", deliver_twice)
    (row,) = bench_core.run_core(sizes=[2], messages=20, warmup=False, baseline=False)
    assert row["duplicated"] >= 2
    assert row["order_errors"] >= 1
    assert not row["exact"]


def test_unknown_scenario_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["no-such-scenario"]) == 2
    assert "core" in capsys.readouterr().err
