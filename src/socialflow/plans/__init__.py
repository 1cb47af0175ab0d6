"""Plans and entitlements: the catalogue of plans, per-tenant overrides, usage, and
`quota.check` / `quota.reserve`, the one place every feature asks "may this tenant do this,
and how much is left?"."""
