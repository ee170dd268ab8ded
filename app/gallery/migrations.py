"""Versioned schema of the gallery database, applied in order at start-up (SQLite and PostgreSQL).

Each migration is a number, a name and its statements; `{blob}` stands for the binary column type of the
dialect. A database records what it has applied in `schema_migrations`; a database migrated by a newer
drface (a version this code does not know) is refused rather than guessed at. Never edit a released
migration: add the next one.

Tables (version 1):
* `subjects`: id (client-chosen or generated), display name, metadata (JSON text), created-at.
* `templates`: one enrolled face: its subject, the model (name, version) whose embedding it holds, the
  embedding (D float32, little-endian), the SHA-256 of the source photo, box, detector score, whether the
  photo was a pre-aligned crop, created-at.
* `template_photos`: the source photo of a template, only when the operator keeps photos.
* `gallery_state`: one row, `version`, raised by every write transaction; `template_changes` lists which
  templates each version touched, so another replica brings its in-memory index up to date by reading only
  what changed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


BLOB_TYPE = {"sqlite": "BLOB", "postgresql": "BYTEA"}

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "subjects, templates, photos, change log",
        (
            """CREATE TABLE subjects (
                id TEXT PRIMARY KEY,
                name TEXT,
                metadata TEXT NOT NULL,
                created_at TEXT NOT NULL
            )""",
            """CREATE TABLE templates (
                id TEXT PRIMARY KEY,
                subject_id TEXT NOT NULL REFERENCES subjects (id) ON DELETE CASCADE,
                model_name TEXT NOT NULL,
                model_version TEXT NOT NULL,
                embedding {blob} NOT NULL,
                photo_sha256 TEXT NOT NULL,
                box TEXT NOT NULL,
                score REAL,
                aligned INTEGER NOT NULL,
                created_at TEXT NOT NULL
            )""",
            "CREATE INDEX templates_subject ON templates (subject_id)",
            "CREATE INDEX templates_model ON templates (model_name, model_version)",
            """CREATE TABLE template_photos (
                template_id TEXT PRIMARY KEY REFERENCES templates (id) ON DELETE CASCADE,
                photo {blob} NOT NULL
            )""",
            "CREATE TABLE gallery_state (id INTEGER PRIMARY KEY, version BIGINT NOT NULL)",
            "INSERT INTO gallery_state (id, version) VALUES (1, 0)",
            "CREATE TABLE template_changes (version BIGINT NOT NULL, template_id TEXT NOT NULL)",
            "CREATE INDEX template_changes_version ON template_changes (version)",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


def statements_for(migration: Migration, dialect: str) -> list[str]:
    """The migration's SQL for `dialect` ('sqlite' or 'postgresql')."""
    return [statement.format(blob=BLOB_TYPE[dialect]) for statement in migration.statements]
