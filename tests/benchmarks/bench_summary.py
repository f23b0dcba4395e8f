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


def summary_lines(entries: dict[str, dict]) -> list[str]:
    """The summary, a line per figure the issue asks for; entries: the last record of each benchmark."""
    lines = ["issue 11's figures from this run, each from one run of its benchmark:"]
    resolution = entries.get("eval_identity")
    if resolution:
        rate = resolution["events_per_second"]
        lines.append(f"  resolution through Kafka ({resolution['events']:,} events): {rate:,.0f} events/s (target 10,000); "
                     f"raw consume {resolution['raw_per_second']:,.0f} records/s; the identity graph offline "
                     f"{resolution['graph_offline_per_second']:,.0f} ({rate / resolution['graph_offline_per_second']:.2f}, "
                     f"target 0.7); the worker's whole code without Kafka {resolution['worker_code_per_second']:,.0f} "
                     f"({rate / resolution['worker_code_per_second']:.2f}); precision {resolution['precision']:.4f}, "
                     f"recall {resolution['recall']:.4f}; worker peak memory {resolution['worker_peak_mb']:,.0f} MB")
    else:
        lines.append("  resolution through Kafka: not run (eval_identity.py)")
    end_to_end = entries.get("bench_end_to_end")
    if end_to_end:
        before, after = end_to_end["noop_before_per_second"], end_to_end["noop_after_per_second"]
        rate = end_to_end["events_per_second"]
        lines.append(f"  end to end ({end_to_end['events']:,} events): {rate:,.0f} events/s (target 4,000); the no-op pipeline "
                     f"{before:,.0f} and {after:,.0f}; ratio {rate / ((before + after) / 2):.2f} (target 0.6)")
    else:
        lines.append("  end to end: not run (bench_end_to_end.py)")
    latency = entries.get("bench_latency")
    if latency:
        lines.append(f"  latency, acceptance to queryable at {latency['rate']:,}/s for {latency['seconds']:.0f} s: "
                     f"p50 {latency['p50_s']:.2f} s, p99 {latency['p99_s']:.2f} s, max {latency['max_s']:.2f} s (target "
                     f"p99 < 2 s); {latency['not_queryable']:,} not queryable")
    else:
        lines.append("  latency: not run (bench_latency.py)")
    recovery = entries.get("bench_recovery")
    if recovery:
        lines.append(f"  recovery with {recovery['identifiers']:,} identifiers: resolving {recovery['after_kill_s']:.1f} s "
                     f"after a kill -9 (target 10 s), {recovery['first_start_s']:.1f} s after a start, "
                     f"{recovery['fresh_machine_s']:.1f} s on a fresh machine; worker peak memory "
                     f"{recovery['worker_peak_mb']:,.0f} MB (the largest of its runs, the load included)")
    else:
        lines.append("  recovery: not run (bench_recovery.py)")
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
