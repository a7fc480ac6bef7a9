"""Orchestration: run folders, caching, resumption. Calls the compute and maths layers."""
