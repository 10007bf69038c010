"""HTTP routes of the management API, one module per resource. Routes own transactions."""
