"""The soak run (``python -m bench soak``) at a tiny size, and its summary.

Seconds, not a soak: no timing assertions. It checks that a short run against a real
server samples the server and the load all along, that churn, stalls, publishing and
the probes' latency reach the report, that the JSON and the chart are written, and that
no process it started outlives it. The summary's warm-up and 10 % verdict are checked
on made-up samples.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest

from bench import report, soak
from bench.__main__ import main as bench_main
from harness.test_harness import children

TINY = [
    "--minutes", "0.05", "--sample-seconds", "0.5", "--soak-connections", "50",
    "--soak-topics", "10", "--soak-rate", "200", "--soak-publishers", "2", "--soak-probes", "2",
    "--soak-churn", "0.2", "--soak-slow", "0.1", "--soak-slow-topics", "3",
    "--soak-read-seconds", "0.5", "--soak-stall-seconds", "0.5", "--conns-per-proc", "20",
    "--setup-seconds", "30",
]  # fmt: skip


def test_a_tiny_soak_samples_and_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = children()
    monkeypatch.setattr(report, "RESULTS_DIR", tmp_path)
    assert bench_main(["soak", *TINY]) == 0
    out = capsys.readouterr().out
    assert "### soak: 50 connections on 10 topics" in out
    assert "(target within 10%)" in out and "HOLD" in out
    (path,) = tmp_path.glob("soak-*.json")
    data = json.loads(path.read_text())
    assert data["failed"] is None
    samples = data["samples"]
    # A sample at go, then one every 0.5 s of the 3 s run, the last at its end.
    assert len(samples) == 7
    assert [s["t_s"] for s in samples] == sorted(s["t_s"] for s in samples)
    for sample in samples:
        assert sample["rss_kb"] > 0
        # 50 held connections, 2 probes and 2 publishers; churn replaces some at times.
        assert sample["fds"] >= sample["clients"] >= 40
    for sample in samples[1:]:
        assert sample["deliveries_per_s"] is not None and sample["server_cpu"] is not None
        assert sample["load_cpu"] is not None
    summary = data["summary"]
    assert summary["rss_warm_kb"] > 0 and summary["rss_end_kb"] > 0
    assert summary["rss_holds"] == (summary["rss_end_kb"] <= 1.1 * summary["rss_warm_kb"])
    assert summary["opened"] >= 54  # every connection once, and the churn's replacements
    assert summary["churned"] > 0 and summary["stalls"] > 0
    assert summary["connect_errors"] == 0
    assert summary["latency_samples"] > 0 and summary["p99_ms"] >= summary["p50_ms"] > 0
    assert summary["acked_per_s"] > 0 and summary["deliveries_per_s"] > 0
    assert data["options"]["soak_connections"] == 50
    assert len(list(tmp_path.glob("soak-*.png"))) == (0 if "matplotlib not" in out else 1)
    assert children() == before


def sample(t_s: float, rss_kb: int | None, **figures: Any) -> soak.Sample:
    base: dict[str, Any] = {field: 0 for field in soak.Sample.__annotations__}
    base.update(t_s=t_s, rss_kb=rss_kb, fds=100, p50_ms=None, p99_ms=None, **figures)
    return cast(soak.Sample, base)


def test_summary_takes_rss_after_warm_up_and_at_the_end() -> None:
    samples = [sample(t, rss) for t, rss in [(0, 50_000), (5, 90_000), (10, 100_000),
                                            (15, 104_000), (20, 109_000)]]  # fmt: skip
    latencies = [[], [9_000], [1_000, 2_000], [3_000], [4_000]]
    summary = soak.summarize(samples, latencies, warmup=6.0)
    # The first sample at or after the warm-up's end: RSS then, against RSS at the end.
    assert (summary["warm_t_s"], summary["rss_warm_kb"]) == (10, 100_000)
    assert summary["rss_end_kb"] == 109_000
    assert summary["rss_growth"] == pytest.approx(0.09)
    assert summary["rss_holds"]
    assert summary["rss_slope_kb_per_min"] == pytest.approx(900 * 60)
    # Latency pooled over the windows after the warm-up sample only.
    assert summary["latency_samples"] == 2
    assert summary["p50_ms"] == 3.0 and summary["max_ms"] == 4.0
    samples[-1] = sample(20, 110_001)
    summary = soak.summarize(samples, latencies, warmup=6.0)
    assert not summary["rss_holds"]
    assert "DOES NOT HOLD" in soak.verdict(summary)


def test_summary_of_a_run_shorter_than_its_warm_up() -> None:
    """The last sample stands for both ends; nothing is made up."""
    summary = soak.summarize([sample(0, 10), sample(1, 12)], [[], []], warmup=60.0)
    assert summary["warm_t_s"] == summary["end_t_s"] == 1
    assert summary["rss_growth"] == 0.0 and "p50_ms" not in summary


def test_bad_options_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        soak.parse(["--soak-slow", "0.95", "--soak-subscribed", "0.9"])
    assert exc.value.code == 2
    assert "--soak-slow" in capsys.readouterr().err
