"""Pydantic models of the payloads that cross a boundary: Meta's webhooks, broker bodies."""
