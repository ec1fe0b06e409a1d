"""The operator's own health: its Prometheus metrics (``metrics``), the HTTP endpoint that serves them with
the liveness probe (``server``), and its logs, as text or one JSON object per line (``logs``)."""
