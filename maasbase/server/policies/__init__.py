"""Pure decision functions: no I/O, time passed in. Thin loops elsewhere carry them out."""
