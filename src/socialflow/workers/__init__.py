"""Background work: the Dramatiq broker, worker middleware and the actor registry."""
