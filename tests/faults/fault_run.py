"""Fault run (not a test): load a generated scenario through a running hub while kill -9 hits, at
random moments, the Faust worker, the broker and the whole hub, then check that nothing was lost,
duplicated or re-keyed.

    python tests/faults/fault_run.py [--events 1000000] [--kills 3] [--seed 7]

The hub (`omnihub run`, embedded broker on disk, embedded chDB) and the loader (`omnihub connectors run
--all --source-dir ...`) run as separate processes, as an operator runs them. The worker and the broker
are restarted by the hub's supervisor; a killed hub is restarted by this script (as an operator would),
and so is the loader, which stops when its broker goes with the hub. Prints: valid events expected,
distinct events in ClickHouse, rows under FINAL, events stored under more than one customer id, dead
letters against rejects, and each kill's recovery time (kill -> the next row queryable in ClickHouse).
Exit status 1 unless 0 lost, 0 duplicated, 0 changed ids and dead letters = rejects.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from connectors.scenario import generate  # noqa: E402
from infra.progress import progress_bar  # noqa: E402


class Operator:
    """Starts and restarts the hub and the loader the way a person at a terminal would."""

    def __init__(self, workdir: Path, scenario: Path):
        self.workdir, self.scenario = workdir, scenario
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("OMNIHUB_")},
                    "OMNIHUB_DATA_DIR": str(workdir / "data"), "OMNIHUB_CLICKHOUSE__EMBEDDED_PATH": str(workdir / "chdb"),
                    "OMNIHUB_CLICKHOUSE__QUERY_PORT": "0"}
        self.hub: subprocess.Popen | None = None
        self.loader: subprocess.Popen | None = None
        self.loader_runs = 0
        self.state_file = workdir / "data" / "hub.json"

    def omnihub(self, *args: str, log: str) -> subprocess.Popen:
        with (self.workdir / log).open("ab") as out:
            return subprocess.Popen([sys.executable, "-m", "infra.cli", *args], env=self.env, cwd=ROOT,
                                    stdout=out, stderr=subprocess.STDOUT)

    def state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def start_hub(self) -> None:
        self.state_file.unlink(missing_ok=True)  # the killed hub's: `omnihub run` would replace it too
        self.hub = self.omnihub("run", log="hub.log")
        deadline = time.monotonic() + 120
        while not (self.state().get("pid") == self.hub.pid and len(self.state().get("components", [])) == 4):
            if self.hub.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the hub did not start; see {self.workdir / 'hub.log'}")
            time.sleep(0.2)

    def start_loader(self) -> None:
        self.loader_runs += 1
        self.loader = self.omnihub("connectors", "run", "--all", "--source-dir", str(self.scenario), log="loader.log")

    def component(self, name: str) -> dict:
        return next((c for c in self.state().get("components", []) if c["name"] == name), {})

    def child_pid(self, name: str) -> int | None:
        return next((c["pid"] for c in self.state().get("components", []) if c["name"] == name and c.get("pid")), None)

    def query(self, sql: str) -> list | None:
        url = self.state().get("query_url")
        if not url:
            return None
        request = urllib.request.Request(url + "/query", data=json.dumps({"sql": sql}).encode(), method="POST")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())["rows"]
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def resolved(self) -> int | None:
        """Channel events the worker has committed (its consumer group's offsets, summed)."""
        import asyncio

        from infra.kafka import consumer_lag

        bootstrap = self.state().get("bootstrap_servers")
        try:
            lag = asyncio.run(consumer_lag(bootstrap, ["omnihub-resolution"])) if bootstrap else None
        except Exception:
            return None
        return sum(committed for _, topic, committed, _ in lag if topic.startswith("channel.")) if lag is not None else None

    def lag(self) -> int | None:
        """Events the worker and the sink have still to process."""
        import asyncio

        from infra.kafka import consumer_lag

        bootstrap = self.state().get("bootstrap_servers")
        try:
            rows = asyncio.run(consumer_lag(bootstrap, ["omnihub-resolution", "omnihub-clickhouse-sink"]))
        except Exception:
            return None
        return sum(end - committed for _, _, committed, end in rows)

    def stored(self) -> int | None:
        rows = self.query("SELECT count() FROM timeline_events")
        return rows[0][0] if rows else None

    def stop(self) -> None:
        for process in (self.loader, self.hub):
            if process and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()


def wait_for_progress(operator: Operator, before: int | None, measure, timeout: float = 600) -> float:
    """Seconds until measure() (ClickHouse rows, or events the worker committed) passes `before`, or the
    load is complete and nothing is left to do."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        now = measure()
        if now is not None and (before is None or now > before):
            return time.monotonic() - started
        if operator.loader and operator.loader.poll() is not None and now is not None and now == before:
            return time.monotonic() - started  # nothing left to load: recovered, idle
        time.sleep(0.5)
    return float("inf")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=None, help="default: events / 10")
    parser.add_argument("--kills", type=int, default=3, help="kills of each of worker, broker and hub")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="omnihub-faults-"))
    started = time.monotonic()
    manifest = generate(workdir / "scenario", args.customers or max(100, args.events // 10), args.events, args.seed)
    valid = sum(c["valid"] for c in manifest["channels"].values())
    malformed = sum(c["malformed"] for c in manifest["channels"].values())
    print(f"scenario: {args.events:,} events, {valid:,} valid records and {malformed:,} malformed, written in "
          f"{time.monotonic() - started:.0f} s to {workdir}", flush=True)

    operator = Operator(workdir, workdir / "scenario")
    operator.start_hub()
    operator.start_loader()
    kills = [target for target in ("worker", "broker", "hub") for _ in range(args.kills)]
    rng.shuffle(kills)
    recoveries: list[tuple[str, float]] = []
    load_started = time.monotonic()
    try:
        for target in kills:
            time.sleep(rng.uniform(5, 25))
            # The worker's recovery shows in its own commits (rows already resolved keep reaching ClickHouse
            # meanwhile); the broker's and the hub's in ClickHouse.
            measure = operator.resolved if target == "worker" else operator.stored
            before = measure()
            if target == "hub":
                os.kill(operator.hub.pid, signal.SIGKILL)
                operator.hub.wait()
                killed_at = time.monotonic()
                if operator.loader.poll() is None:  # it loses its broker with the hub; an operator stops and reruns it
                    operator.loader.send_signal(signal.SIGTERM)
                    operator.loader.wait()
                operator.start_hub()
                operator.start_loader()
            else:
                pid = operator.child_pid(target)
                os.kill(pid, signal.SIGKILL)
                killed_at = time.monotonic()
                if target == "worker":  # counted from the kill: the killed worker may have committed meanwhile
                    before = measure()
                if target == "broker":  # rows fetched before the kill may still land: count from its return
                    while operator.child_pid("broker") in (pid, None) or operator.component("broker")["state"] != "running":
                        time.sleep(0.1)
                    before = measure()
            wait_for_progress(operator, before, measure)
            recovery = time.monotonic() - killed_at
            recoveries.append((target, recovery))
            what = "events resolved" if target == "worker" else "rows in ClickHouse"
            print(f"  kill -9 {target:<6} at {killed_at - load_started:6.0f} s with {before or 0:,} {what}; "
                  f"progress again after {recovery:.1f} s", flush=True)
            time.sleep(5)
            if operator.loader.poll() is not None and operator.loader.returncode != 0:
                operator.start_loader()  # it failed while its broker was away: run it again, it resumes
        # Let the loader finish (rerunning it if a broker restart made it fail), then the pipeline drain.
        while True:
            code = operator.loader.wait()
            if code == 0:
                break
            print(f"  loader exited with status {code}: running it again", flush=True)
            operator.start_loader()
        # Drained: nothing left for the worker (its lag is 0) and ClickHouse stable for 15 s.
        previous, stable_since = -1, time.monotonic()
        bar = progress_bar(valid, "in ClickHouse", unit="events")
        while time.monotonic() - stable_since < 15:
            now = (operator.stored() or 0, operator.lag())
            bar.update(min(now[0], valid) - bar.n)
            if now != previous or now[1] != 0:
                previous, stable_since = now, time.monotonic()
            time.sleep(3)
        bar.close()
        load_seconds = time.monotonic() - load_started - 15
        distinct, final_rows, rows = operator.query(
            "SELECT uniqExact(event_id), (SELECT count() FROM timeline_events FINAL), count() FROM timeline_events")[0]
        changed = operator.query("SELECT count() FROM (SELECT event_id FROM timeline_events GROUP BY event_id "
                                 "HAVING uniqExact(customer_id) > 1)")[0][0]
        letters = operator.query("SELECT uniqExact(source, position) FROM dead_letters WHERE component LIKE 'connector:%'")[0][0]
    finally:
        operator.stop()
    lost, duplicated = valid - distinct, final_rows - distinct
    print(f"valid events expected {valid:,}; distinct events in ClickHouse {distinct:,}; rows under FINAL "
          f"{final_rows:,} ({rows:,} physical); events whose customer id changed {changed:,}; dead letters "
          f"{letters:,} for {malformed:,} rejects; loader runs {operator.loader_runs}; {load_seconds:.0f} s of loading")
    for target in ("worker", "broker", "hub"):
        times = [f"{seconds:.1f}" for name, seconds in recoveries if name == target]
        print(f"recovery after kill -9 of the {target}: {', '.join(times)} s")
    ok = lost == 0 and duplicated == 0 and changed == 0 and letters == malformed
    print(f"lost {lost}, duplicated {duplicated}, changed ids {changed}: " + ("OK" if ok else "FAILED"))
    if not args.keep and ok:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
