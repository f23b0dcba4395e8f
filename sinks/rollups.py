"""The report rollups (sinks/sql/0013_timeline_facts.sql) checked against the events they count, and rebuilt
when they disagree: a kill -9 between a facts insert and its rollups' leaves the rollups short, and the replay
cannot mend it (it finds the facts there). Run by the hub at start, before the sink."""
from __future__ import annotations

import logging
import time
from importlib import resources

log = logging.getLogger(__name__)
ROLLUPS = ("timeline_minutes", "customer_activity", "sku_minutes", "ingest_minutes", "order_mentions")


def rollups_disagree(client) -> str | None:
    """Why the rollups do not count what timeline_facts holds, or None."""
    sql = (resources.files("sinks") / "sql" / "rollups_check.sql").read_text()
    facts, minutes, customers, ingested, mentions, mentions_expected, sku_keys, sku_expected = client.query(sql).result_rows[0]
    problems = [f"{name} counts {counted:,} events" for name, counted in (("timeline_minutes", minutes),
                                                                           ("customer_activity", customers),
                                                                           ("ingest_minutes", ingested))
                if counted != facts]
    if mentions != mentions_expected:
        problems.append(f"order_mentions holds {mentions:,} contacts where the facts name {mentions_expected:,}")
    if sku_keys != sku_expected:
        problems.append(f"sku_minutes has {sku_keys:,} minute/channel/campaign keys where the lines give {sku_expected:,}")
    return f"timeline_facts holds {facts:,} events; " + "; ".join(problems) if problems else None


def rebuild_rollups(client) -> float:
    """Empty the rollups and feed them every fact again (each once: FINAL); seconds taken. The facts written
    again collapse into the ones there (ReplacingMergeTree). Nothing else may write meanwhile."""
    started = time.perf_counter()
    for table in ROLLUPS:
        client.command(f"TRUNCATE TABLE {table}")
    client.command("INSERT INTO timeline_facts SELECT * FROM timeline_facts FINAL")
    return time.perf_counter() - started


def check_rollups(client) -> None:
    """Rebuild the rollups if they disagree with the facts, saying so in one line."""
    problem = rollups_disagree(client)
    if problem is None:
        return
    log.warning("report rollups disagree with the events (%s): rebuilding them", problem)
    seconds = rebuild_rollups(client)
    still = rollups_disagree(client)
    if still:
        log.error("report rollups still disagree after a rebuild (%s); reports may be wrong", still)
    else:
        log.info("report rollups rebuilt in %.1f s", seconds)
