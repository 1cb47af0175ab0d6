"""Media library: direct uploads to storage, validation by content, derivatives without
metadata, per-platform variants."""
