"""The gallery as the service holds it: the store, and the served model's search index kept in step.

`Gallery.open(settings)` connects and migrates at start-up; `load_index(model, D)` loads every template of
the served model once the model is known. Before each search `sync()` compares the store's version with the
index's (one small query) and applies only the templates that changed since, whichever replica wrote them.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from app.engine import EmbeddedFace, Engine
from app.gallery.errors import ModelMismatchError, NoEnrolledFaceError
from app.gallery.index import TemplateIndex
from app.gallery.store import GalleryStore, ModelId
from app.settings import Settings

logger = logging.getLogger("drface.app")


def served_model(engine: Engine) -> ModelId:
    """The model whose templates the service searches: the loaded one."""
    return ModelId(engine.card.name, engine.card.version)


def largest_face(engine: Engine, photo: bytes, aligned: bool) -> EmbeddedFace:
    """The largest face of the photo, with its embedding (NoFaceError when there is none)."""
    return engine.embed(engine.find_faces(photo, aligned, limit=1))[0]


def reenrol_advice(subject_hint: str = "each subject") -> str:
    """How to get templates of the served model back, for error messages and the CLI."""
    return (
        f"re-enrol {subject_hint}'s photos with POST /v1/subjects/{{id}}/faces, or, where the server "
        "kept the photos (DRFACE_GALLERY_KEEP_PHOTOS=true), run `drface gallery reembed`"
    )


class Gallery:
    """Store + in-memory index of the served model's templates."""

    def __init__(self, store: GalleryStore, keep_photos: bool) -> None:
        self.store = store
        self.keep_photos = keep_photos
        self.model: ModelId | None = None
        self.other_model_templates = 0  # templates made by another model: not searched
        self._index: TemplateIndex | None = None
        self._sync_lock = threading.Lock()

    @classmethod
    def open(cls, settings: Settings) -> Gallery:
        """Connect to DRFACE_GALLERY_URL (default: SQLite in DRFACE_STATE_DIR) and migrate its schema."""
        store = GalleryStore.open(settings.gallery_url, settings.state_dir)
        logger.info("gallery: %s, schema version %d", store.description, store.schema_version())
        return cls(store, settings.gallery_keep_photos)

    def close(self) -> None:
        self.store.close()

    def load_index(self, model: ModelId, embedding_dim: int) -> None:
        """Load every template of `model` into a fresh index (at start-up, or when the store was replaced)."""
        with self._sync_lock:
            rows = self.store.index_rows(model, embedding_dim)
            self._index = TemplateIndex.from_rows(
                rows.embeddings, rows.template_ids, rows.subject_ids, rows.version
            )
            self.model = model
            self.other_model_templates = self.store.count_templates(model, other_models=True)
        logger.info(
            "gallery index: %d templates of %s (%d of other models, not searched)",
            len(rows.template_ids),
            model.label,
            self.other_model_templates,
        )

    def sync(self) -> TemplateIndex:
        """The index, brought up to the store's current version; RuntimeError before `load_index`."""
        if self._index is None or self.model is None:
            raise RuntimeError("the gallery index is not loaded yet")
        with self._sync_lock:
            index = self._index
            delta = self.store.changes_since(index.version, self.model)
            if delta is None:
                return index
            if delta.version >= 0:
                new_ids = any(template_id not in index for template_id, _, _ in delta.upserts)
                for template_id, subject_id, embedding in delta.upserts:
                    index.upsert(template_id, subject_id, embedding)
                for template_id in delta.removed:
                    index.remove(template_id)
                index.version = delta.version
                # Recount the other models' templates (a table scan) only when they may have changed: a
                # template left this model's view, or one joined it while others exist (re-embedding).
                if delta.removed or (new_ids and self.other_model_templates):
                    self.other_model_templates = self.store.count_templates(self.model, other_models=True)
                return index
        # The database went back in time (restored from a backup, replaced): start over.
        logger.warning("gallery version went backwards: reloading the index")
        self.load_index(self.model, index.embedding_dim)
        assert self._index is not None
        return self._index

    def verify(self, subject_id: str, probe: np.ndarray, model: ModelId) -> tuple[float, str]:
        """(best similarity of `probe` to the subject's templates of `model`, that template's id)."""
        _, templates = self.store.subject_templates(subject_id, with_embeddings=True)
        usable = [t for t in templates if t.model == model and t.embedding is not None]
        if not usable:
            if not templates:
                raise NoEnrolledFaceError(
                    f"subject {subject_id!r} has no enrolled face: POST /v1/subjects/{subject_id}/faces first"
                )
            others = sorted({t.model.label for t in templates})
            raise ModelMismatchError(
                f"subject {subject_id!r} was enrolled with {', '.join(others)}, but the server runs "
                f"{model.label}; embeddings of different models cannot be compared: "
                + reenrol_advice(f"subject {subject_id!r}")
            )
        similarities = np.stack([t.embedding for t in usable]) @ np.asarray(probe, np.float32)
        best = int(np.argmax(similarities))
        return float(similarities[best]), usable[best].id
