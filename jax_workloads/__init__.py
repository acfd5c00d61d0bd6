"""Reusable JAX workloads shared by the templates, and the sealed export/evaluation helpers."""
