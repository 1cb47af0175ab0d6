"""Search: a generated tsvector of each item's text in the tenant's language (GIN), its tags
(GIN) for filters, and an HNSW index of its vectors by cosine distance.

The text-search configuration is the tenant's language's (caption language, else locale),
`simple` when PostgreSQL has no dictionary for it; decided server-side, as tenant revisions
render offline. The HNSW index exists for dimensions HNSW takes (≤ 2,000).

Revision ID: t0006
Revises: t0005
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "t0006"
down_revision: str | None = "t0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Weighted: title, tags and hashtags (A), caption (B), alt texts (C), description (D).
# Immutable, as a generated column needs (array_to_string is only stable: its output does not
# change for text arrays).
_FUNCTION = """
CREATE FUNCTION media_search_doc(
    config regconfig, title text, caption text, description text, alt_text text,
    caption_alt_text text, tags text[], hashtags text[]
) RETURNS tsvector LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT setweight(to_tsvector(config, coalesce(title, '') || ' '
           || coalesce(array_to_string(tags, ' '), '') || ' '
           || coalesce(array_to_string(hashtags, ' '), '')), 'A')
    || setweight(to_tsvector(config, coalesce(caption, '')), 'B')
    || setweight(to_tsvector(config, coalesce(alt_text, '') || ' '
           || coalesce(caption_alt_text, '')), 'C')
    || setweight(to_tsvector(config, coalesce(description, '')), 'D')
$$
"""
_COLUMN = """
DO $$
DECLARE
    language text;
    config text;
BEGIN
    SELECT lower(split_part(replace(coalesce(a.caption_language, s.locale, 'en'), '_', '-'),
                            '-', 1))
      INTO language
      FROM settings s LEFT JOIN ai_settings a ON a.id = 1 WHERE s.id = 1;
    config := CASE language
        WHEN 'ar' THEN 'arabic'
        WHEN 'ca' THEN 'catalan'
        WHEN 'da' THEN 'danish'
        WHEN 'de' THEN 'german'
        WHEN 'el' THEN 'greek'
        WHEN 'en' THEN 'english'
        WHEN 'es' THEN 'spanish'
        WHEN 'eu' THEN 'basque'
        WHEN 'fi' THEN 'finnish'
        WHEN 'fr' THEN 'french'
        WHEN 'ga' THEN 'irish'
        WHEN 'hi' THEN 'hindi'
        WHEN 'hu' THEN 'hungarian'
        WHEN 'hy' THEN 'armenian'
        WHEN 'id' THEN 'indonesian'
        WHEN 'it' THEN 'italian'
        WHEN 'lt' THEN 'lithuanian'
        WHEN 'nb' THEN 'norwegian'
        WHEN 'ne' THEN 'nepali'
        WHEN 'nl' THEN 'dutch'
        WHEN 'nn' THEN 'norwegian'
        WHEN 'no' THEN 'norwegian'
        WHEN 'pt' THEN 'portuguese'
        WHEN 'ro' THEN 'romanian'
        WHEN 'ru' THEN 'russian'
        WHEN 'sr' THEN 'serbian'
        WHEN 'sv' THEN 'swedish'
        WHEN 'ta' THEN 'tamil'
        WHEN 'tr' THEN 'turkish'
        WHEN 'yi' THEN 'yiddish'
        ELSE 'simple' END;
    EXECUTE format(
        'ALTER TABLE media_items ADD COLUMN search_doc tsvector GENERATED ALWAYS AS '
        '(media_search_doc(%L::regconfig, title, caption, description, alt_text, '
        'caption_alt_text, tags, hashtags)) STORED',
        config
    );
END
$$
"""
_VECTOR_INDEX = """
DO $$
BEGIN
    IF (SELECT embedding_dimension FROM ai_settings WHERE id = 1) <= 2000 THEN
        CREATE INDEX ix_media_embeddings_hnsw ON media_embeddings
            USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);
    END IF;
END
$$
"""


def upgrade() -> None:
    op.execute(_FUNCTION)
    op.execute(_COLUMN)
    op.create_index(
        "ix_media_items_search_doc", "media_items", ["search_doc"], postgresql_using="gin"
    )
    op.create_index("ix_media_items_tags", "media_items", ["tags"], postgresql_using="gin")
    op.execute(_VECTOR_INDEX)


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_media_embeddings_hnsw")
    op.drop_index("ix_media_items_tags", "media_items")
    op.drop_index("ix_media_items_search_doc", "media_items")
    op.drop_column("media_items", "search_doc")
    op.execute("DROP FUNCTION media_search_doc")
