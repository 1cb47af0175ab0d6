"""Audit entries (tenant and platform), written with the change they record, and the
audit-log route."""
