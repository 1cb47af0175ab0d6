"""Cross-cutting pieces: problem responses, request context, logging."""
