"""Users, authentication, memberships and roles, agency admins."""
