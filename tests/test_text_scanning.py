"""Patterns run over text nobody checked first (a dead letter's raw record, a ticket, an analyst's statement)
find what they did before and take time in proportion to the text: a hostile megabyte must not hold a
connector or a query thread (it held the web-orders connector of tests/faults/hostile_inputs.py)."""
from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.privacy import EMAIL_IN_TEXT, PHONE_IN_TEXT
from sinks.read_only import TRAILING_FORMAT, split_format

# The patterns as first written: right, but quadratic on a long run of the characters they repeat.
PLAIN_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
PLAIN_FORMAT = re.compile(r"\s+FORMAT\s+(\w+)\s*$", re.IGNORECASE)
MEGABYTE = 1_000_000
ROOT = Path(__file__).resolve().parents[1]


def finishes(code: str, seconds: float = 60.0) -> bool:
    """Whether this Python code ends within `seconds`, in a process of its own (the regular expression engine
    keeps the GIL: a thread could not even give up waiting on it). It takes a second at most here; the
    quadratic patterns took hours."""
    try:
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=seconds, check=True)
        return True
    except subprocess.TimeoutExpired:
        return False


def test_emails_and_phones_are_found_in_text():
    text = "Write to Jane.Doe+promo@mail.example.com or bob@shop.fr. Call +33 6 12 34 56 78, not 12."
    assert [m.group(0) for m in EMAIL_IN_TEXT.finditer(text)] == ["Jane.Doe+promo@mail.example.com", "bob@shop.fr"]
    assert [m.group(0) for m in PHONE_IN_TEXT.finditer(text)] == ["+33 6 12 34 56 78"]


@pytest.mark.parametrize("plain, linear, pieces", [
    (PLAIN_EMAIL, EMAIL_IN_TEXT, list("ab1_.+-@ é\n,;:")),
    (PLAIN_FORMAT, TRAILING_FORMAT, [" ", "\n", "\t", "FORMAT", "format", "JSON", "x", "1", ";", "Fo"]),
])
def test_the_linear_patterns_find_what_the_plain_ones_found(plain, linear, pieces):
    generator = random.Random(11)
    for _ in range(50_000):
        text = "".join(generator.choice(pieces) for _ in range(generator.randint(0, 24)))
        assert [(m.start(), m.group(0)) for m in linear.finditer(text)] == \
               [(m.start(), m.group(0)) for m in plain.finditer(text)], repr(text)


@pytest.mark.parametrize("text", ['"a" * M', '"a@" * (M // 2)', '"a@" + "b." * (M // 2)', '"-" * M'])
def test_a_hostile_megabyte_is_scanned_for_emails_at_once(text):
    assert finishes(f"from connectors.privacy import EMAIL_IN_TEXT\nM = {MEGABYTE}\nlist(EMAIL_IN_TEXT.finditer({text}))")


def test_a_dead_letter_of_a_megabyte_is_sealed_for_the_person_it_names_at_once(tmp_path):
    raw = ("x" * MEGABYTE + " reach me at jane@example.com").encode()
    (tmp_path / "raw").write_bytes(raw)
    assert finishes(f"""
from pathlib import Path
from connectors.privacy import EdgeSealer
from infra.settings import load_settings
sealer = EdgeSealer(load_settings(None, data_dir=Path({str(tmp_path)!r})))
raw = Path({str(tmp_path / "raw")!r}).read_bytes()
sealed, keys = sealer.seal_raw(raw)
assert len(keys) == 1 and keys[0].startswith("email:") and sealed != raw, keys   # sealed for the one person it names
""")


def test_a_statement_of_a_megabyte_of_spaces_is_read_at_once():
    assert finishes(f"from sinks.read_only import split_format\nsplit_format('SELECT 1' + ' ' * {MEGABYTE} + 'x')")
    assert split_format("SELECT 1\n FORMAT JSONEachRow ") == ("SELECT 1", "JSONEachRow")
    assert split_format("SELECT 'FORMAT JSON' AS x") == ("SELECT 'FORMAT JSON' AS x", None)
