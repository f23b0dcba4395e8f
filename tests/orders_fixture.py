"""Web-order JSON Lines files for tests and benchmarks (the raw export format of connectors/samples)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path


def web_order(i: int) -> dict:
    created = datetime(2026, 11, 20, 9, 0, tzinfo=timezone(timedelta(hours=1))) + timedelta(seconds=i)
    price_cents = 1000 + (i * 37) % 50000
    return {
        "order_id": f"W-{i:08d}",
        "created_at": created.isoformat(),
        "customer": {"account_id": f"A-{i % 997}", "email": f"customer{i % 997}@example.com"},
        "currency": "EUR",
        "lines": [{"sku": f"SKU-{i % 50}", "qty": 1 + i % 3, "unit_price": f"{price_cents / 100:.2f}"}],
        "shipping_cost": "4.90",
        "total": f"{(price_cents * (1 + i % 3) + 490) / 100:.2f}",
    }


def write_web_orders(path: Path, count: int, start: int = 0, malformed_lines: dict[int, str] | None = None) -> Path:
    """count valid orders; malformed_lines maps a 1-based line number to a raw bad line inserted there."""
    malformed_lines = malformed_lines or {}
    with Path(path).open("w") as out:
        line_number, written = 0, 0
        while written < count or (line_number + 1) in malformed_lines:
            line_number += 1
            if line_number in malformed_lines:
                out.write(malformed_lines[line_number] + "\n")
            else:
                out.write(json.dumps(web_order(start + written)) + "\n")
                written += 1
    return Path(path)
