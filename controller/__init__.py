"""PoolPilot: a Kopf operator for self-hosted vLLM pools on spot capacity with a hosted-API fallback."""
