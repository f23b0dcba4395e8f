"""Minimal reproductions of the embedded tansu broker's departures from Kafka.

Each module runs against a broker address and returns what it observed; `python -m infra.quirks`
starts an embedded broker and prints them all. tests/test_broker_quirks.py asserts each one, so an
upgraded tansu that fixes a quirk fails a test and tells us to drop its workaround.
"""
