"""OpenAI-compatible AI gateway: routing, streaming, keys, metering, limits."""
