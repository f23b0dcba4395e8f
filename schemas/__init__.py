"""Avro schemas for every topic, the pydantic models that validate records at the edge, and the codec."""
