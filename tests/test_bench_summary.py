"""`make bench`'s summary (tests/benchmarks/bench_summary.py): each benchmark's figures as it recorded them, and the
ones that did not run named as such."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.benchmarks.bench_summary import SUMMARY_FILE, record

ROOT = Path(__file__).resolve().parents[1]


def test_make_bench_ends_with_the_figures_each_benchmark_recorded_and_names_those_that_did_not_run(tmp_path, monkeypatch):
    summary = tmp_path / "bench-summary.jsonl"
    monkeypatch.delenv(SUMMARY_FILE, raising=False)
    record("bench_latency", rate=2000, seconds=300.0, p50_s=0.5, p99_s=1.0, max_s=1.5, not_queryable=0)
    assert not summary.exists()   # a benchmark run alone records nothing
    monkeypatch.setenv(SUMMARY_FILE, str(summary))
    record("eval_identity", events=49_762, events_per_second=11_041.2, raw_per_second=84_948.0,
           graph_offline_per_second=54_220.0, worker_code_per_second=17_370.0, precision=1.0, recall=0.9974,
           worker_peak_mb=402.4)
    record("bench_end_to_end", events=995_010, events_per_second=5_000.0, noop_before_per_second=11_000.0,
           noop_after_per_second=9_000.0)
    record("bench_end_to_end", events=995_010, events_per_second=5_583.0, noop_before_per_second=11_182.0,
           noop_after_per_second=10_535.0)   # run again: the last run's figures are shown
    record("bench_recovery", identifiers=1_000_000, first_start_s=4.12, after_kill_s=4.08, fresh_machine_s=14.7,
           worker_peak_mb=1_692.3)
    printed = subprocess.run([sys.executable, "tests/benchmarks/bench_summary.py", str(summary)], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.splitlines()
    assert printed[0] == "issue 11's figures from this run, each from one run of its benchmark:"
    resolution, end_to_end, latency, recovery = printed[1:]
    assert "11,041 events/s (target 10,000)" in resolution and "raw consume 84,948 records/s" in resolution
    assert "offline 54,220 (0.20, target 0.7)" in resolution and "without Kafka 17,370 (0.64)" in resolution
    assert "precision 1.0000, recall 0.9974" in resolution and "worker peak memory 402 MB" in resolution
    assert end_to_end == ("  end to end (995,010 events): 5,583 events/s (target 4,000); the no-op pipeline 11,182 and "
                          "10,535; ratio 0.51 (target 0.6)")
    assert latency == "  latency: not run (bench_latency.py)"
    assert recovery == ("  recovery with 1,000,000 identifiers: resolving 4.1 s after a kill -9 (target 10 s), 4.1 s after "
                        "a start, 14.7 s on a fresh machine; worker peak memory 1,692 MB (the largest of its runs, the load "
                        "included)")
