"""Search over a tenant's media: full text, semantic and hybrid (reciprocal rank fusion)."""
