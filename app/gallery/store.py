"""The gallery's database: subjects, their face templates, and the change log replicas follow.

`GalleryStore.open(url, state_dir)` connects and applies the migrations (app.gallery.migrations). The URL
picks the database:

* empty: SQLite, the file `gallery.sqlite3` in `state_dir`;
* `sqlite:///relative/path.sqlite3` or `sqlite:////absolute/path.sqlite3`: SQLite, that file;
* `postgresql://user:password@host:5432/dbname` (or `postgres://`): PostgreSQL, through psycopg.

Every write is one transaction that also raises `gallery_state.version` and records the template ids it
touched in `template_changes`. SQLite runs with `synchronous=FULL` in WAL mode, so a write that returned is
on disk. In PostgreSQL the version row is locked by each writer until it commits, so versions commit in
order and a reader that has seen version v has seen every change up to v.

Deleted rows are really gone: SQLite runs with `secure_delete` (freed pages are zeroed) and checkpoints its
write-ahead log after a delete, so neither the database file nor the log keeps the embedding or photo.
(PostgreSQL keeps dead row versions until VACUUM, which autovacuum runs; docs/api.md says so.)

One connection per store, used by one thread at a time (a lock): gallery writes are rare next to the
embedding work, and searches read the in-memory index (app.gallery.index), not the database.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from app.gallery.errors import FaceNotFoundError, SubjectExistsError, SubjectNotFoundError
from app.gallery.migrations import LATEST_VERSION, MIGRATIONS, statements_for

SQLITE_FILE_NAME = "gallery.sqlite3"
EMBEDDING_DTYPE = np.dtype("<f4")  # embeddings are stored as little-endian float32 bytes
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_SQLITE_SCHEME = "sqlite:///"
_MIGRATION_LOCK_KEY = 1_919_181_001  # PostgreSQL advisory lock: one replica migrates at a time
_IN_CHUNK = 500  # ids per `IN (...)` list
_LOAD_CHUNK = 10_000  # rows fetched at a time while loading the index


@dataclass(frozen=True)
class ModelId:
    """The model that made an embedding: templates of different models are never compared."""

    name: str
    version: str

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class SubjectRecord:
    id: str
    name: str | None
    metadata: dict[str, Any]
    created_at: str
    face_count: int


@dataclass(frozen=True)
class TemplateRecord:
    """One enrolled face; `embedding` (D,) float32 unit-norm, loaded only where needed."""

    id: str
    subject_id: str
    model: ModelId
    photo_sha256: str
    box_xyxy: list[float]
    score: float | None
    created_at: str
    has_photo: bool
    embedding: np.ndarray | None = None


@dataclass(frozen=True)
class IndexRows:
    """Templates of one model: `embeddings` (N, D) float32, row i being `template_ids[i]`."""

    version: int
    template_ids: list[str]
    subject_ids: list[str]
    embeddings: np.ndarray


@dataclass(frozen=True)
class IndexDelta:
    """What changed since an index's version: templates to (re)insert and template ids to drop."""

    version: int
    upserts: list[tuple[str, str, np.ndarray]]
    removed: list[str]


def parse_gallery_url(url: str, state_dir: Path) -> tuple[str, str]:
    """(dialect, target): ('sqlite', file path) or ('postgresql', connection URL). ValueError otherwise."""
    if not url:
        return "sqlite", str(state_dir / SQLITE_FILE_NAME)
    if url.startswith(_POSTGRES_SCHEMES):
        return "postgresql", url
    if url.startswith(_SQLITE_SCHEME) and len(url) > len(_SQLITE_SCHEME):
        return "sqlite", url[len(_SQLITE_SCHEME) :]
    raise ValueError(
        f"gallery URL {url!r} is not understood: use sqlite:///path/to/file.sqlite3 or "
        "postgresql://user:password@host:5432/dbname (or leave it empty for the default SQLite file)"
    )


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def embedding_bytes(embedding: np.ndarray) -> bytes:
    return np.ascontiguousarray(embedding, dtype=EMBEDDING_DTYPE).tobytes()


def embedding_from(data: bytes) -> np.ndarray:
    return np.frombuffer(bytes(data), dtype=EMBEDDING_DTYPE).astype(np.float32)


class _Sql:
    """Runs statements written with `?` placeholders on either database."""

    def __init__(self, connection: Any, dialect: str) -> None:
        self.connection = connection
        self.postgres = dialect == "postgresql"

    def run(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Execute; returns the cursor (fetchall, fetchone, rowcount)."""
        return self.connection.execute(sql.replace("?", "%s") if self.postgres else sql, tuple(params))

    def stream(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Execute a large SELECT; its rows are fetched in chunks (`fetchmany`), not all at once
        (PostgreSQL: a server-side cursor, so a million templates are not held twice in memory)."""
        if not self.postgres:
            return self.connection.execute(sql, tuple(params))
        cursor = self.connection.cursor(name="drface_stream")
        cursor.execute(sql.replace("?", "%s"), tuple(params))
        return cursor

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return list(self.run(sql, params).fetchall())

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        return self.run(sql, params).fetchone()


class GalleryStore:
    """Subjects and templates in SQLite or PostgreSQL; thread-safe (one connection behind a lock)."""

    def __init__(self, dialect: str, target: str) -> None:
        self.dialect = dialect
        self._target = target
        self._lock = threading.RLock()
        self._connection: Any = None

    @classmethod
    def open(cls, url: str, state_dir: Path) -> GalleryStore:
        """Connect to the gallery at `url` (empty: SQLite in `state_dir`) and bring its schema up to date."""
        store = cls(*parse_gallery_url(url, state_dir))
        store.migrate()
        return store

    @property
    def description(self) -> str:
        """Where the gallery lives, without a password."""
        if self.dialect == "sqlite":
            return f"SQLite {self._target}"
        from psycopg.conninfo import conninfo_to_dict

        info = conninfo_to_dict(self._target)
        return f"PostgreSQL {info.get('host', '')}:{info.get('port', 5432)}/{info.get('dbname', '')}"

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    # -- connection and transactions ------------------------------------------------------------------
    def _connect(self) -> Any:
        if self.dialect == "sqlite":
            if self._target != ":memory:":
                Path(self._target).parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(
                self._target, isolation_level=None, check_same_thread=False, timeout=30
            )
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")  # a commit that returned survives a power cut
            connection.execute("PRAGMA foreign_keys=ON")
            connection.execute("PRAGMA secure_delete=ON")  # deleted rows are overwritten, not just unlinked
            return connection
        import psycopg

        return psycopg.connect(self._target, autocommit=True, connect_timeout=10)

    def _open_connection(self) -> Any:
        if self._connection is None or getattr(self._connection, "closed", False):
            self._connection = self._connect()
        return self._connection

    @contextmanager
    def _transaction(self, write: bool = False) -> Iterator[_Sql]:
        """One transaction; a write transaction holds the database's write lock from its start."""
        with self._lock:
            connection = self._open_connection()
            sql = _Sql(connection, self.dialect)
            if self.dialect == "sqlite":
                connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield sql
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
                connection.execute("COMMIT")
                return
            import psycopg

            try:
                with connection.transaction():
                    yield sql
            except psycopg.OperationalError:
                connection.close()  # reconnect on the next call (server restarted, network cut)
                self._connection = None
                raise

    def _is_integrity_error(self, error: BaseException) -> bool:
        if self.dialect == "sqlite":
            return isinstance(error, sqlite3.IntegrityError)
        import psycopg

        return isinstance(error, psycopg.IntegrityError)

    def _bump_version(self, sql: _Sql, template_ids: Sequence[str]) -> int:
        """Raise the gallery version (locking its row until commit) and log the touched templates."""
        row = sql.one("UPDATE gallery_state SET version = version + 1 WHERE id = 1 RETURNING version")
        assert row is not None
        version = int(row[0])
        for template_id in template_ids:
            sql.run(
                "INSERT INTO template_changes (version, template_id) VALUES (?, ?)", (version, template_id)
            )
        return version

    def _release_deleted_pages(self) -> None:
        """SQLite: copy the zeroed pages into the database file and empty the write-ahead log."""
        if self.dialect == "sqlite":
            with self._lock:
                self._open_connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- schema ------------------------------------------------------------------------------------------
    def migrate(self) -> list[int]:
        """Apply the migrations this database lacks, in order, in one transaction; returns their versions."""
        with self._transaction(write=True) as sql:
            if self.dialect == "postgresql":
                sql.run("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK_KEY,))
            sql.run(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            applied = {int(row[0]) for row in sql.rows("SELECT version FROM schema_migrations")}
            unknown = sorted(version for version in applied if version > LATEST_VERSION)
            if unknown:
                raise RuntimeError(
                    f"the gallery database has schema version {unknown[-1]}, newer than this drface knows "
                    f"({LATEST_VERSION}): upgrade drface, or point DRFACE_GALLERY_URL at another database"
                )
            done = []
            for migration in MIGRATIONS:
                if migration.version in applied:
                    continue
                for statement in statements_for(migration, self.dialect):
                    sql.run(statement)
                sql.run(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, utc_now()),
                )
                done.append(migration.version)
            return done

    def schema_version(self) -> int:
        with self._transaction() as sql:
            row = sql.one("SELECT MAX(version) FROM schema_migrations")
        return int(row[0]) if row and row[0] is not None else 0

    # -- subjects ----------------------------------------------------------------------------------------
    def create_subject(
        self, subject_id: str | None, name: str | None, metadata: dict[str, Any]
    ) -> SubjectRecord:
        """A new subject (id generated when None); SubjectExistsError when the id is taken."""
        subject_id = subject_id or uuid.uuid4().hex
        created_at = utc_now()
        try:
            with self._transaction(write=True) as sql:
                if sql.one("SELECT 1 FROM subjects WHERE id = ?", (subject_id,)):
                    raise SubjectExistsError(f"subject {subject_id!r} already exists")
                sql.run(
                    "INSERT INTO subjects (id, name, metadata, created_at) VALUES (?, ?, ?, ?)",
                    (subject_id, name, json.dumps(metadata), created_at),
                )
        except Exception as exc:
            if self._is_integrity_error(exc):  # created by another replica meanwhile
                raise SubjectExistsError(f"subject {subject_id!r} already exists") from exc
            raise
        return SubjectRecord(subject_id, name, metadata, created_at, 0)

    _SUBJECT_COLUMNS = (
        "s.id, s.name, s.metadata, s.created_at, (SELECT COUNT(*) FROM templates t WHERE t.subject_id = s.id)"
    )

    @staticmethod
    def _subject(row: tuple) -> SubjectRecord:
        return SubjectRecord(row[0], row[1], json.loads(row[2]), row[3], int(row[4]))

    def list_subjects(self, limit: int, after: str | None = None) -> list[SubjectRecord]:
        """Up to `limit` subjects ordered by id, those after the id `after` (a page cursor)."""
        with self._transaction() as sql:
            rows = sql.rows(
                f"SELECT {self._SUBJECT_COLUMNS} FROM subjects s WHERE s.id > ? ORDER BY s.id LIMIT ?",
                (after or "", limit),
            )
        return [self._subject(row) for row in rows]

    def get_subject(self, subject_id: str) -> SubjectRecord:
        with self._transaction() as sql:
            return self._get_subject(sql, subject_id)

    def _get_subject(self, sql: _Sql, subject_id: str) -> SubjectRecord:
        row = sql.one(f"SELECT {self._SUBJECT_COLUMNS} FROM subjects s WHERE s.id = ?", (subject_id,))
        if row is None:
            raise SubjectNotFoundError(f"no subject {subject_id!r}")
        return self._subject(row)

    def subject_templates(
        self, subject_id: str, with_embeddings: bool = False
    ) -> tuple[SubjectRecord, list[TemplateRecord]]:
        """The subject and its templates, oldest first; SubjectNotFoundError when there is no such subject."""
        with self._transaction() as sql:
            subject = self._get_subject(sql, subject_id)
            rows = sql.rows(
                "SELECT t.id, t.subject_id, t.model_name, t.model_version, t.photo_sha256, t.box, t.score, "
                "t.created_at, (SELECT COUNT(*) FROM template_photos p WHERE p.template_id = t.id), "
                f"{'t.embedding' if with_embeddings else 'NULL'} "
                "FROM templates t WHERE t.subject_id = ? ORDER BY t.created_at, t.id",
                (subject_id,),
            )
        return subject, [self._template(row) for row in rows]

    @staticmethod
    def _template(row: tuple) -> TemplateRecord:
        return TemplateRecord(
            id=row[0],
            subject_id=row[1],
            model=ModelId(row[2], row[3]),
            photo_sha256=row[4],
            box_xyxy=json.loads(row[5]),
            score=row[6],
            created_at=row[7],
            has_photo=bool(row[8]),
            embedding=None if row[9] is None else embedding_from(row[9]),
        )

    def subject_names(self, subject_ids: Sequence[str]) -> dict[str, str | None]:
        """Display name of each of these subjects that exists."""
        names: dict[str, str | None] = {}
        with self._transaction() as sql:
            for start in range(0, len(subject_ids), _IN_CHUNK):
                chunk = list(subject_ids[start : start + _IN_CHUNK])
                marks = ", ".join("?" * len(chunk))
                for row in sql.rows(f"SELECT id, name FROM subjects WHERE id IN ({marks})", chunk):
                    names[row[0]] = row[1]
        return names

    def delete_subject(self, subject_id: str) -> int:
        """Delete the subject, its templates and their photos; returns how many templates went."""
        with self._transaction(write=True) as sql:
            self._get_subject(sql, subject_id)
            template_ids = [
                row[0] for row in sql.rows("SELECT id FROM templates WHERE subject_id = ?", (subject_id,))
            ]
            sql.run(
                "DELETE FROM template_photos WHERE template_id IN "
                "(SELECT id FROM templates WHERE subject_id = ?)",
                (subject_id,),
            )
            sql.run("DELETE FROM templates WHERE subject_id = ?", (subject_id,))
            sql.run("DELETE FROM subjects WHERE id = ?", (subject_id,))
            self._bump_version(sql, template_ids)
        self._release_deleted_pages()
        return len(template_ids)

    # -- templates ---------------------------------------------------------------------------------------
    def add_template(
        self,
        subject_id: str,
        model: ModelId,
        embedding: np.ndarray,
        photo_sha256: str,
        box_xyxy: list[float],
        score: float | None,
        aligned: bool,
        photo: bytes | None = None,
    ) -> tuple[TemplateRecord, bool]:
        """Enrol one face; (template, created). The same photo enrolled again for the subject and model
        returns the existing template (created False), so a client may retry an enrolment safely."""
        created_at = utc_now()
        template_id = uuid.uuid4().hex
        try:
            with self._transaction(write=True) as sql:
                self._get_subject(sql, subject_id)
                existing = sql.one(
                    "SELECT id, box, score, created_at, "
                    "(SELECT COUNT(*) FROM template_photos p WHERE p.template_id = t.id) FROM templates t "
                    "WHERE subject_id = ? AND photo_sha256 = ? AND model_name = ? AND model_version = ?",
                    (subject_id, photo_sha256, model.name, model.version),
                )
                if existing is not None:
                    record = TemplateRecord(
                        existing[0],
                        subject_id,
                        model,
                        photo_sha256,
                        json.loads(existing[1]),
                        existing[2],
                        existing[3],
                        bool(existing[4]),
                    )
                    return record, False
                sql.run(
                    "INSERT INTO templates (id, subject_id, model_name, model_version, embedding, "
                    "photo_sha256, box, score, aligned, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        template_id,
                        subject_id,
                        model.name,
                        model.version,
                        embedding_bytes(embedding),
                        photo_sha256,
                        json.dumps(box_xyxy),
                        score,
                        int(aligned),
                        created_at,
                    ),
                )
                if photo is not None:
                    sql.run(
                        "INSERT INTO template_photos (template_id, photo) VALUES (?, ?)", (template_id, photo)
                    )
                self._bump_version(sql, [template_id])
        except Exception as exc:
            if self._is_integrity_error(exc):  # the subject was deleted by another replica meanwhile
                raise SubjectNotFoundError(f"no subject {subject_id!r}") from exc
            raise
        record = TemplateRecord(
            template_id, subject_id, model, photo_sha256, box_xyxy, score, created_at, photo is not None
        )
        return record, True

    def delete_template(self, subject_id: str, template_id: str) -> None:
        """Delete one template of the subject and its photo; FaceNotFoundError when it has no such face."""
        with self._transaction(write=True) as sql:
            self._get_subject(sql, subject_id)
            found = sql.one(
                "SELECT 1 FROM templates WHERE id = ? AND subject_id = ?", (template_id, subject_id)
            )
            if found is None:
                raise FaceNotFoundError(f"subject {subject_id!r} has no face {template_id!r}")
            sql.run("DELETE FROM template_photos WHERE template_id = ?", (template_id,))
            sql.run("DELETE FROM templates WHERE id = ?", (template_id,))
            self._bump_version(sql, [template_id])
        self._release_deleted_pages()

    def count_templates(self, model: ModelId | None = None, other_models: bool = False) -> int:
        """All templates; with `model`, those of that model (or, with `other_models`, of any other)."""
        with self._transaction() as sql:
            if model is None:
                row = sql.one("SELECT COUNT(*) FROM templates")
            else:
                condition = (
                    "NOT (model_name = ? AND model_version = ?)"
                    if other_models
                    else ("model_name = ? AND model_version = ?")
                )
                row = sql.one(
                    f"SELECT COUNT(*) FROM templates WHERE {condition}", (model.name, model.version)
                )
        return int(row[0]) if row else 0

    def templates_per_model(self) -> dict[tuple[str, str], int]:
        """Template count per (model name, model version)."""
        with self._transaction() as sql:
            rows = sql.rows(
                "SELECT model_name, model_version, COUNT(*) FROM templates "
                "GROUP BY model_name, model_version ORDER BY model_name, model_version"
            )
        return {(row[0], row[1]): int(row[2]) for row in rows}

    # -- the search index's view ---------------------------------------------------------------------
    def version(self) -> int:
        """The gallery version: raised by every write, by any replica."""
        with self._transaction() as sql:
            row = sql.one("SELECT version FROM gallery_state WHERE id = 1")
        return int(row[0]) if row else 0

    def index_rows(self, model: ModelId, embedding_dim: int) -> IndexRows:
        """Every template of `model`, as one (N, D) float32 matrix, and the version they are as of."""
        with self._transaction() as sql:
            if self.dialect == "postgresql":  # one snapshot: the count, the rows and the version agree
                sql.run("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            row = sql.one("SELECT version FROM gallery_state WHERE id = 1")
            version = int(row[0]) if row else 0
            count_row = sql.one(
                "SELECT COUNT(*) FROM templates WHERE model_name = ? AND model_version = ?",
                (model.name, model.version),
            )
            count = int(count_row[0]) if count_row else 0
            embeddings = np.empty((count, embedding_dim), dtype=np.float32)
            template_ids: list[str] = []
            subject_ids: list[str] = []
            cursor = sql.stream(
                "SELECT id, subject_id, embedding FROM templates WHERE model_name = ? AND model_version = ?",
                (model.name, model.version),
            )
            while True:
                chunk = cursor.fetchmany(_LOAD_CHUNK)
                if not chunk:
                    break
                start = len(template_ids)
                # One join per chunk: frombuffer over a single buffer instead of one array per row.
                block = np.frombuffer(b"".join(bytes(r[2]) for r in chunk), dtype=EMBEDDING_DTYPE)
                embeddings[start : start + len(chunk)] = block.reshape(len(chunk), embedding_dim)
                template_ids.extend(r[0] for r in chunk)
                subject_ids.extend(r[1] for r in chunk)
            cursor.close()
        return IndexRows(version, template_ids, subject_ids, embeddings[: len(template_ids)])

    def changes_since(self, version: int, model: ModelId) -> IndexDelta | None:
        """What changed after `version` for `model`'s index; None when nothing did. A database whose
        version is below `version` (replaced or restored) gives a delta with version -1: reload."""
        with self._transaction() as sql:
            row = sql.one("SELECT version FROM gallery_state WHERE id = 1")
            current = int(row[0]) if row else 0
            if current == version:
                return None
            if current < version:
                return IndexDelta(-1, [], [])
            touched = sorted(
                {
                    r[0]
                    for r in sql.rows(
                        "SELECT template_id FROM template_changes WHERE version > ? AND version <= ?",
                        (version, current),
                    )
                }
            )
            upserts = []
            for start in range(0, len(touched), _IN_CHUNK):
                chunk = touched[start : start + _IN_CHUNK]
                marks = ", ".join("?" * len(chunk))
                rows = sql.rows(
                    f"SELECT id, subject_id, embedding FROM templates WHERE id IN ({marks}) "
                    "AND model_name = ? AND model_version = ?",
                    (*chunk, model.name, model.version),
                )
                upserts.extend((r[0], r[1], embedding_from(r[2])) for r in rows)
        present = {template_id for template_id, _, _ in upserts}
        return IndexDelta(current, upserts, [t for t in touched if t not in present])

    # -- re-embedding ----------------------------------------------------------------------------------
    def templates_to_reembed(self, model: ModelId) -> tuple[list[str], int]:
        """(ids of templates of other models that have a stored photo, count of those without one)."""
        with self._transaction() as sql:
            rows = sql.rows(
                "SELECT t.id, (SELECT COUNT(*) FROM template_photos p WHERE p.template_id = t.id) "
                "FROM templates t WHERE NOT (t.model_name = ? AND t.model_version = ?) ORDER BY t.id",
                (model.name, model.version),
            )
        with_photo = [r[0] for r in rows if r[1]]
        return with_photo, len(rows) - len(with_photo)

    def template_photo(self, template_id: str) -> tuple[bytes, bool] | None:
        """(stored photo, whether it is a pre-aligned crop) of a template, or None without a photo."""
        with self._transaction() as sql:
            row = sql.one(
                "SELECT p.photo, t.aligned FROM template_photos p JOIN templates t ON t.id = p.template_id "
                "WHERE p.template_id = ?",
                (template_id,),
            )
        return None if row is None else (bytes(row[0]), bool(row[1]))

    def replace_embedding(
        self,
        template_id: str,
        model: ModelId,
        embedding: np.ndarray,
        box_xyxy: list[float],
        score: float | None,
    ) -> bool:
        """Store `model`'s embedding in place of the template's old one; False if the template is gone."""
        with self._transaction(write=True) as sql:
            cursor = sql.run(
                "UPDATE templates SET model_name = ?, model_version = ?, embedding = ?, box = ?, score = ? "
                "WHERE id = ?",
                (
                    model.name,
                    model.version,
                    embedding_bytes(embedding),
                    json.dumps(box_xyxy),
                    score,
                    template_id,
                ),
            )
            if cursor.rowcount == 0:
                return False
            self._bump_version(sql, [template_id])
        return True
