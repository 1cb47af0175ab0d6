"""What full-text search reads of an item: `media_items.search_doc`, a tsvector GENERATED from
its title, tags and hashtags (weight A), caption (B), alt texts (C) and description (D) in the
tenant's text-search configuration, GIN-indexed (migration t0006; search/ queries it).

The configuration is the tenant's language's PostgreSQL dictionary, `simple` (no stemming, no
stop words) for a language PostgreSQL has none for. It is a constant of the column's
expression, so a language change re-generates the column (search.language)."""

from __future__ import annotations

# Language (ISO 639-1) → the text-search configuration PostgreSQL 16 ships for it.
CONFIGS: dict[str, str] = {
    "ar": "arabic",
    "ca": "catalan",
    "da": "danish",
    "de": "german",
    "el": "greek",
    "en": "english",
    "es": "spanish",
    "eu": "basque",
    "fi": "finnish",
    "fr": "french",
    "ga": "irish",
    "hi": "hindi",
    "hu": "hungarian",
    "hy": "armenian",
    "id": "indonesian",
    "it": "italian",
    "lt": "lithuanian",
    "nb": "norwegian",
    "ne": "nepali",
    "nl": "dutch",
    "nn": "norwegian",
    "no": "norwegian",
    "pt": "portuguese",
    "ro": "romanian",
    "ru": "russian",
    "sr": "serbian",
    "sv": "swedish",
    "ta": "tamil",
    "tr": "turkish",
    "yi": "yiddish",
}
FALLBACK = "simple"
FUNCTION = "media_search_doc"
COLUMNS = "title, caption, description, alt_text, caption_alt_text, tags, hashtags"


def config_for(language: str | None) -> str:
    """The configuration for a language tag (`en`, `pt-BR`); `simple` when there is none."""
    primary = (language or "").split("-")[0].split("_")[0].lower()
    return CONFIGS.get(primary, FALLBACK)


def generated_expression(config: str) -> str:
    """The column's expression for `config` (one of CONFIGS' values or FALLBACK)."""
    if config != FALLBACK and config not in CONFIGS.values():
        raise ValueError(f"unknown text-search configuration {config!r}")
    return f"{FUNCTION}('{config}'::regconfig, {COLUMNS})"


# The configuration the tenant's column was generated with, read from its expression (so a
# query is always parsed as the documents were); the tenant's schema on the search_path.
CURRENT_CONFIG_SQL = r"""
SELECT substring(pg_get_expr(d.adbin, d.adrelid) FROM '''([a-z_]+)''::regconfig') AS name
FROM pg_attrdef d
JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
WHERE d.adrelid = to_regclass('media_items') AND a.attname = 'search_doc'
"""
