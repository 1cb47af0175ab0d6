"""Customer webhooks and the event history they are fed from."""
