"""Every table the product declares. Importing this module fills `SharedBase.metadata` and
`TenantBase.metadata`: the target metadata of the two Alembic trees (autogenerate compares the
database with them) and what hand-tuned SQL is built from."""

from __future__ import annotations

from socialflow.ai import models as ai_models
from socialflow.audit import models as audit_models
from socialflow.db.base import SharedBase, TenantBase
from socialflow.identity import models as identity_models
from socialflow.media import models as media_models
from socialflow.members import models as members_models
from socialflow.outbox import models as outbox_models
from socialflow.plans import models as plans_models
from socialflow.publishing import models as publishing_models
from socialflow.social import models as social_models
from socialflow.tenancy import models as tenancy_models
from socialflow.tenancy.fleet import models as fleet_models
from socialflow.vault import models as vault_models
from socialflow.webhooks import models as webhooks_models

MODEL_MODULES = (
    ai_models,
    audit_models,
    fleet_models,
    identity_models,
    media_models,
    members_models,
    outbox_models,
    plans_models,
    publishing_models,
    social_models,
    tenancy_models,
    vault_models,
    webhooks_models,
)
SHARED_METADATA = SharedBase.metadata
TENANT_METADATA = TenantBase.metadata
