"""The pool's OpenAI-compatible front door: replicas first, the hosted API for what they cannot take."""
