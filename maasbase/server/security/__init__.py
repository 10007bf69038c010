"""Secrets: password hashing, signed access tokens, API key material, login throttling."""
