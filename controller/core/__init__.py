"""Pure decisions: no I/O, no clock reads (time is an argument), no Kubernetes or HTTP clients.

An import-linter contract in pyproject.toml keeps it so.
"""
