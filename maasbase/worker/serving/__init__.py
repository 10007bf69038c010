"""The serving manager: runs the inference servers a worker is assigned."""
