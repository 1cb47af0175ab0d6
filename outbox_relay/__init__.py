"""The outbox relay: moves committed outbox rows to the Dramatiq broker (`socialflow relay`)."""
