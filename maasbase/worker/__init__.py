"""Worker agent: GPU detection, registration, heartbeats, serving manager."""
