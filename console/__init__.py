"""The web console and department reports: what people look at, read from ClickHouse like any analyst."""
