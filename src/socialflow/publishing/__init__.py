"""Posts, their review and approval, scheduling, and the publish engine."""
