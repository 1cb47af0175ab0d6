"""Tenant schema names reach SQL only validated and quoted."""

from __future__ import annotations

import pytest

from socialflow.db.tenant_schema import (
    InvalidSchemaName,
    quote_schema,
    search_path_for,
    validate_schema_name,
)


@pytest.mark.parametrize(
    "name",
    [
        "shared",
        "public",
        "extensions",
        "pg_catalog",
        't_a"; DROP SCHEMA shared; --',
        "t_A",
        "t_",
        "",
    ],
)
def test_names_outside_the_pattern_are_refused(name: str) -> None:
    with pytest.raises(InvalidSchemaName):
        validate_schema_name(name)


def test_search_path_is_the_tenant_then_extensions_only() -> None:
    assert quote_schema("t_acme_co") == '"t_acme_co"'
    assert search_path_for("t_acme_co") == '"t_acme_co", extensions'
