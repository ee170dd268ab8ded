"""Exact cosine search over the enrolled templates of one model, in memory.

The index holds every template of the served model as a row of one contiguous (capacity, D) float32 matrix
(rows [0, count) are live). Embeddings are unit-length, so cosine similarity is a dot product and a search
is one matrix-vector product over the live rows: (N, D) @ (D,) -> (N,) similarities in [-1, 1].

Identification ranks subjects, not templates: a subject's similarity is the best of its templates. The
exact top-k subjects are the first k distinct subjects met when walking templates from the most similar
down, so the search takes the `m` most similar templates (np.argpartition, O(N)), sorts them, and widens
`m` until k distinct subjects are found or every template was seen.

Writes keep the matrix in step without a rebuild: a new template is appended (capacity doubles when full),
a removed one is overwritten by the last row. The index remembers the gallery version it reflects; the
owner (app.gallery.service) applies the store's changes after that version before a search.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

_INITIAL_CAPACITY = 1024
_CANDIDATES_PER_SUBJECT = 4  # first guess of templates to look at per wanted subject


@dataclass(frozen=True)
class Candidate:
    """A subject and its best similarity to the probe, with the template that gave it."""

    subject_id: str
    similarity: float
    template_id: str


class TemplateIndex:
    """Templates of one model: add, remove, and exact top-k subjects by cosine similarity. Thread-safe."""

    def __init__(self, embedding_dim: int, version: int = 0) -> None:
        self.embedding_dim = embedding_dim
        self.version = version
        self._matrix = np.empty((0, embedding_dim), dtype=np.float32)
        self._count = 0
        self._template_ids: list[str] = []
        self._subject_ids: list[str] = []
        self._row_of: dict[str, int] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_rows(
        cls, embeddings: np.ndarray, template_ids: list[str], subject_ids: list[str], version: int
    ) -> TemplateIndex:
        """An index over `embeddings` (N, D) float32, row i being template `template_ids[i]`."""
        index = cls(embeddings.shape[1], version)
        capacity = max(_INITIAL_CAPACITY, len(template_ids))
        index._matrix = np.empty((capacity, embeddings.shape[1]), dtype=np.float32)
        index._matrix[: len(template_ids)] = embeddings
        index._count = len(template_ids)
        index._template_ids = list(template_ids)
        index._subject_ids = list(subject_ids)
        index._row_of = {template_id: row for row, template_id in enumerate(template_ids)}
        return index

    def __len__(self) -> int:
        return self._count

    def __contains__(self, template_id: str) -> bool:
        return template_id in self._row_of

    def upsert(self, template_id: str, subject_id: str, embedding: np.ndarray) -> None:
        """Add a template, or replace the embedding of one already here. `embedding` (D,) unit-norm."""
        with self._lock:
            row = self._row_of.get(template_id)
            if row is None:
                row = self._count
                if row == len(self._matrix):
                    grown = np.empty((max(_INITIAL_CAPACITY, 2 * row), self.embedding_dim), np.float32)
                    grown[:row] = self._matrix[:row]
                    self._matrix = grown
                self._count += 1
                self._template_ids.append(template_id)
                self._subject_ids.append(subject_id)
                self._row_of[template_id] = row
            self._matrix[row] = embedding
            self._subject_ids[row] = subject_id

    def remove(self, template_id: str) -> bool:
        """Drop a template (the last row moves into its place); False when it is not here."""
        with self._lock:
            row = self._row_of.pop(template_id, None)
            if row is None:
                return False
            last = self._count - 1
            if row != last:
                self._matrix[row] = self._matrix[last]
                self._template_ids[row] = self._template_ids[last]
                self._subject_ids[row] = self._subject_ids[last]
                self._row_of[self._template_ids[row]] = row
            self._template_ids.pop()
            self._subject_ids.pop()
            self._count = last
            return True

    def search(self, probe: np.ndarray, top_k: int) -> list[Candidate]:
        """The `top_k` subjects most similar to `probe` (D,) unit-norm, best first (exact)."""
        with self._lock:
            count = self._count
            if count == 0 or top_k <= 0:
                return []
            similarities = self._matrix[:count] @ np.asarray(probe, dtype=np.float32)
            wanted = min(count, top_k * _CANDIDATES_PER_SUBJECT)
            while True:
                if wanted < count:
                    rows = np.argpartition(similarities, count - wanted)[count - wanted :]
                else:
                    rows = np.arange(count)
                rows = rows[np.argsort(-similarities[rows], kind="stable")]
                found: dict[str, Candidate] = {}
                for row in rows.tolist():
                    subject_id = self._subject_ids[row]
                    if subject_id not in found:
                        found[subject_id] = Candidate(
                            subject_id, float(similarities[row]), self._template_ids[row]
                        )
                        if len(found) == top_k:
                            break
                if len(found) == top_k or wanted == count:
                    return list(found.values())
                wanted = min(count, wanted * 4)
