"""Who may do what: the caller (Principal), the permission matrix, and per-request tenant
resolution (TenantRef, TenantAccess); what every tenant-scoped feature imports."""
