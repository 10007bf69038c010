"""Request and response bodies of the management API, one module per resource."""
