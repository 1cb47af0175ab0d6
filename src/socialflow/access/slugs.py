"""Tenant and agency slugs: lowercase letters, digits and single hyphens, 3 to 40 characters."""

from __future__ import annotations

import re

from socialflow.lib.problems import Problem

SLUG_PATTERN = re.compile(r"[a-z](?:[a-z0-9]|-(?=[a-z0-9])){2,39}")
RESERVED_SLUGS = frozenset(
    {
        "admin",
        "api",
        "app",
        "assets",
        "auth",
        "billing",
        "default",
        "docs",
        "extensions",
        "health",
        "help",
        "internal",
        "me",
        "new",
        "null",
        "operator",
        "platform",
        "public",
        "ready",
        "root",
        "schema",
        "shared",
        "socialflow",
        "static",
        "status",
        "support",
        "system",
        "tenant",
        "tenants",
        "www",
    }
)


def is_valid_slug(slug: str) -> bool:
    return bool(SLUG_PATTERN.fullmatch(slug))


def validate_new_slug(slug: str, *, what: str = "tenant") -> str:
    if not is_valid_slug(slug):
        raise Problem(
            422,
            "invalid-slug",
            f"A {what} slug has 3 to 40 lowercase letters, digits or single hyphens, "
            "starts with a letter and does not end with a hyphen.",
            errors=[{"field": "slug", "message": "invalid slug"}],
        )
    if slug in RESERVED_SLUGS:
        raise Problem(
            422,
            "reserved-slug",
            f"{slug!r} is reserved.",
            errors=[{"field": "slug", "message": "reserved"}],
        )
    return slug
