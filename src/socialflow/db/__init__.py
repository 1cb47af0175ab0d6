"""Database access: engine, sessions, units of work and the tenant search_path discipline."""
