"""Benchmarks for npcserver: ``python -m bench`` (see bench/README.md). Printed tables, never timed assertions."""
