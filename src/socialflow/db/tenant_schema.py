"""Tenant schema names: validated against one pattern and quoted as identifiers, never formatted
from raw input."""

from __future__ import annotations

import re

# `t_` + the tenant slug with hyphens as underscores; the prefix keeps tenant schemas apart from
# `shared`, `extensions`, `public` and `pg_*` whatever a slug is.
SCHEMA_PATTERN = re.compile(r"t_[a-z][a-z0-9_]{2,39}")


class InvalidSchemaName(ValueError):
    """A name that is not a tenant schema name."""


def validate_schema_name(name: str) -> str:
    if not SCHEMA_PATTERN.fullmatch(name):
        raise InvalidSchemaName(f"not a tenant schema name: {name!r}")
    return name


def quote_schema(name: str) -> str:
    """The schema as a quoted SQL identifier (validated first, so quoting is belt and braces)."""
    return '"' + validate_schema_name(name).replace('"', '""') + '"'


# Sessions without a tenant resolve unqualified names in `extensions` only; shared tables are
# always schema-qualified, so a query that forgot its tenant fails instead of reading another.
NO_TENANT_SEARCH_PATH = "extensions"


def set_search_path(value_sql: str) -> str:
    """The SQL expression pointing this transaction's search_path at `value_sql` (a bound
    parameter, or a quoted literal): SET LOCAL semantics, gone at commit, safe behind a
    transaction pooler. Every statement that sets a search_path is built with it."""
    return f"set_config('search_path', {value_sql}, true)"


def search_path_for(schema: str) -> str:
    """A tenant transaction's search_path: its schema, then extensions — never the shared one."""
    return f"{quote_schema(schema)}, extensions"


def schema_for_tenant(slug: str) -> str:
    """The schema of the tenant with this slug (slugs use hyphens, schema names underscores)."""
    return validate_schema_name("t_" + slug.replace("-", "_"))
