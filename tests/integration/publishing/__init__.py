"""Posts, review, scheduling and the publish engine."""
