"""Connectors: read channel systems, validate at the edge, publish to channel topics or dead letters."""
