"""`make bench`'s last words: issue 11's figures from the run, in one place.

    python tests/benchmarks/bench_summary.py FILE

A benchmark run with OMNIHUB_BENCH_SUMMARY=FILE in its environment appends one JSON line of its headline figures
to FILE as it ends (record()); `make bench` empties FILE first and prints it with this script last, so the figures
the issue asks for (resolution with raw consume and offline rates beside it, end to end with the no-op pipeline and
the ratio, latency, recovery after a kill -9, peak worker memory) are read together, each from one run of its own
benchmark in that `make bench`. A benchmark that did not run (or failed before its end) is named as not run.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

SUMMARY_FILE = "OMNIHUB_BENCH_SUMMARY"   # the environment variable naming FILE


def record(benchmark: str, **figures) -> None:
    """Append this benchmark's figures to the summary file, if the run has one (`make bench`)."""
    path = os.environ.get(SUMMARY_FILE)
    if path:
        with open(path, "a") as file:
            file.write(json.dumps({"benchmark": benchmark, **figures}) + "\n")


def resolution_line(figures: dict) -> str:
    rate = figures["events_per_second"]
    return (f"resolution through Kafka ({figures['events']:,} events): {rate:,.0f} events/s (target 10,000); raw consume "
            f"{figures['raw_per_second']:,.0f} records/s; the identity graph offline {figures['graph_offline_per_second']:,.0f} "
            f"({rate / figures['graph_offline_per_second']:.2f}, target 0.7); the worker's whole code without Kafka "
            f"{figures['worker_code_per_second']:,.0f} ({rate / figures['worker_code_per_second']:.2f}); precision "
            f"{figures['precision']:.4f}, recall {figures['recall']:.4f}; worker peak memory {figures['worker_peak_mb']:,.0f} MB")


def end_to_end_line(figures: dict) -> str:
    before, after, rate = figures["noop_before_per_second"], figures["noop_after_per_second"], figures["events_per_second"]
    return (f"end to end ({figures['events']:,} events): {rate:,.0f} events/s (target 4,000); the no-op pipeline "
            f"{before:,.0f} and {after:,.0f}; ratio {rate / ((before + after) / 2):.2f} (target 0.6)")


def latency_line(figures: dict) -> str:
    return (f"latency, acceptance to queryable at {figures['rate']:,}/s for {figures['seconds']:.0f} s: p50 "
            f"{figures['p50_s']:.2f} s, p99 {figures['p99_s']:.2f} s, max {figures['max_s']:.2f} s (target p99 < 2 s); "
            f"{figures['not_queryable']:,} not queryable")


def recovery_line(figures: dict) -> str:
    return (f"recovery with {figures['identifiers']:,} identifiers: resolving {figures['after_kill_s']:.1f} s after a "
            f"kill -9 (target 10 s), {figures['first_start_s']:.1f} s after a start, {figures['fresh_machine_s']:.1f} s on "
            f"a fresh machine; worker peak memory {figures['worker_peak_mb']:,.0f} MB (the largest of its runs, the load "
            f"included)")


# (the benchmark that records it, what is measured, the line made of its figures), in the order
FIGURES = (("eval_identity", "resolution through Kafka", resolution_line),
           ("bench_end_to_end", "end to end", end_to_end_line),
           ("bench_latency", "latency", latency_line),
           ("bench_recovery", "recovery", recovery_line))


def summary_lines(entries: dict[str, dict]) -> list[str]:
    """The summary, a line per figure the issue asks for; entries: the last record of each benchmark."""
    lines = ["issue 11's figures from this run, each from one run of its benchmark:"]
    for benchmark, measured, line in FIGURES:
        figures = entries.get(benchmark)
        lines.append("  " + (line(figures) if figures else f"{measured}: not run ({benchmark}.py)"))
    return lines


def main() -> None:
    path = Path(sys.argv[1])
    entries: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            entries[entry.pop("benchmark")] = entry
    print("\n".join(summary_lines(entries)))


if __name__ == "__main__":
    main()
