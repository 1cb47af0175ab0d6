"""Roles and what each may do in a tenant: the whole matrix in one place."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    EDITOR = "editor"
    VIEWER = "viewer"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def at_least(self, other: Role) -> bool:
        return self.rank >= other.rank


_RANK = {Role.VIEWER: 1, Role.EDITOR: 2, Role.ADMIN: 3, Role.OWNER: 4}


class Permission(StrEnum):
    TENANT_READ = "tenant:read"
    SETTINGS_READ = "settings:read"
    SETTINGS_WRITE = "settings:write"
    MEMBERS_READ = "members:read"
    MEMBERS_MANAGE = "members:manage"
    API_KEYS_MANAGE = "api_keys:manage"
    AUDIT_READ = "audit:read"
    EVENTS_READ = "events:read"
    WEBHOOKS_MANAGE = "webhooks:manage"
    AI_KEYS_MANAGE = "ai_keys:manage"
    CONTENT_READ = "content:read"
    CONTENT_WRITE = "content:write"
    CONTENT_MANAGE = "content:manage"  # others' content too (deleting their media)
    CONTENT_APPROVE = "content:approve"
    PUBLISH = "publish"
    OWNERSHIP_MANAGE = "ownership:manage"


_VIEWER = frozenset(
    {
        Permission.TENANT_READ,
        Permission.SETTINGS_READ,
        Permission.MEMBERS_READ,
        Permission.CONTENT_READ,
    }
)
_EDITOR = _VIEWER | {Permission.CONTENT_WRITE}
_ADMIN = _EDITOR | {
    Permission.SETTINGS_WRITE,
    Permission.MEMBERS_MANAGE,
    Permission.API_KEYS_MANAGE,
    Permission.AUDIT_READ,
    Permission.EVENTS_READ,
    Permission.WEBHOOKS_MANAGE,
    Permission.AI_KEYS_MANAGE,
    Permission.CONTENT_APPROVE,
    Permission.CONTENT_MANAGE,
    Permission.PUBLISH,
}
_OWNER = _ADMIN | {Permission.OWNERSHIP_MANAGE}

#   role    → permissions (each role has everything of the roles below it)
PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: _VIEWER,
    Role.EDITOR: frozenset(_EDITOR),
    Role.ADMIN: frozenset(_ADMIN),
    Role.OWNER: frozenset(_OWNER),
}


# What a member made a reviewer may do beyond their role: approve posts or send them back.
REVIEWER_PERMISSIONS = frozenset({Permission.CONTENT_APPROVE})


def allows(role: Role, permission: Permission) -> bool:
    return permission in PERMISSIONS[role]
