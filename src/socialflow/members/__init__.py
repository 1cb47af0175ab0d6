"""A tenant's members, their invitations and the tenant's API keys."""
