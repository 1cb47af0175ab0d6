"""Agencies, tenants, provisioning, lifecycle and per-request tenant resolution."""
