"""Who is calling, and the one 401 answer for a caller who cannot be recognised."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from socialflow.lib.problems import Problem


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a person (access token) or an integration (a tenant API key).

    For an API key, `user_id` is the key's id, `tenant_id` the only tenant it reaches and
    `key_role` its role there.
    """

    user_id: uuid.UUID
    email: str
    is_operator: bool
    kind: str = "user"
    tenant_id: uuid.UUID | None = None
    key_role: str | None = None

    @property
    def actor(self) -> str:
        """How audit entries and events name the caller."""
        return f"{self.kind}:{self.user_id}"


def unauthorized(detail: str) -> Problem:
    return Problem(
        401, "unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="socialflow"'}
    )
