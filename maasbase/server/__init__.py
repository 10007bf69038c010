"""Control plane: management API, auth, database, scheduler and controllers."""
