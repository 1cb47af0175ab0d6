"""AI: BYOK provider keys, model settings, credentials (`ai.credentials.credentials_for`), and
calls through the outbound guard (`ai.calls.acompletion`)."""
