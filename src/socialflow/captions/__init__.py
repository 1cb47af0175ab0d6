"""AI captions and embeddings of media items (on the AI calls of `ai/`)."""
