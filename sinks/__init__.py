"""Sinks: the unified topics into ClickHouse (batched, idempotent), and the DDL and views."""
