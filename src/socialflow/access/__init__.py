"""Who may do what: the caller (Principal), the permission matrix, per-request tenant
resolution (TenantRef, TenantAccess) and the route guards that check it (guards.py); what every
tenant-scoped feature imports."""
