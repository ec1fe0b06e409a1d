"""Kubernetes edges: render owned objects (pure), diff them (pure), and apply them (I/O)."""
