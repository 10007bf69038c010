"""Static assets of the web UI."""
