"""The gallery: storage, migrations, replica sync and search, on SQLite and (where it runs) PostgreSQL."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from app.gallery.errors import FaceNotFoundError, SubjectExistsError, SubjectNotFoundError
from app.gallery.index import TemplateIndex
from app.gallery.migrations import LATEST_VERSION
from app.gallery.service import Gallery
from app.gallery.store import GalleryStore, ModelId, parse_gallery_url

MODEL = ModelId("drface-test", "1")
OTHER_MODEL = ModelId("drface-old", "0")
DIM = 8


def unit(seed: int, dim: int = DIM) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


def enrol(
    store: GalleryStore, subject_id: str, seed: int, model: ModelId = MODEL, photo: bytes | None = None
):
    data = photo if photo is not None else f"photo {seed}".encode()
    template, _ = store.add_template(
        subject_id, model, unit(seed), hashlib.sha256(data).hexdigest(), [0, 0, 1, 1], 0.9, False, photo
    )
    return template


@pytest.fixture
def store(gallery_url: str, tmp_path: Path):
    store = GalleryStore.open(gallery_url, tmp_path)
    yield store
    store.close()


def test_url_picks_the_database(tmp_path: Path) -> None:
    assert parse_gallery_url("", tmp_path) == ("sqlite", str(tmp_path / "gallery.sqlite3"))
    assert parse_gallery_url("sqlite:////abs/g.db", tmp_path) == ("sqlite", "/abs/g.db")
    assert parse_gallery_url("sqlite:///rel/g.db", tmp_path) == ("sqlite", "rel/g.db")
    assert parse_gallery_url("postgresql://u@h/db", tmp_path)[0] == "postgresql"
    with pytest.raises(ValueError, match="not understood"):
        parse_gallery_url("mysql://u@h/db", tmp_path)


def test_migrations_are_applied_once_and_recorded(gallery_url: str, tmp_path: Path) -> None:
    first = GalleryStore(*parse_gallery_url(gallery_url, tmp_path))
    assert first.migrate() == list(range(1, LATEST_VERSION + 1))
    assert first.migrate() == []
    assert first.schema_version() == LATEST_VERSION
    first.close()
    again = GalleryStore.open(gallery_url, tmp_path)  # a restart: nothing to do, data kept
    assert again.schema_version() == LATEST_VERSION
    again.close()


def test_a_schema_newer_than_the_code_is_refused(
    store: GalleryStore, gallery_url: str, tmp_path: Path
) -> None:
    with store._transaction(write=True) as sql:
        sql.run(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)", (999, "x", "now")
        )
    with pytest.raises(RuntimeError, match="newer than this drface knows"):
        GalleryStore.open(gallery_url, tmp_path)


def test_subjects_are_created_listed_in_pages_and_deleted(store: GalleryStore) -> None:
    for number in range(5):
        store.create_subject(f"user-{number}", f"User {number}", {"n": number})
    generated = store.create_subject(None, None, {})
    assert len(generated.id) == 32
    with pytest.raises(SubjectExistsError):
        store.create_subject("user-1", "again", {})
    first = store.list_subjects(limit=2)
    second = store.list_subjects(limit=2, after=first[-1].id)
    assert [s.id for s in first + second] == sorted(s.id for s in store.list_subjects(limit=100))[:4]
    assert store.get_subject("user-3").metadata == {"n": 3}
    store.delete_subject("user-3")
    with pytest.raises(SubjectNotFoundError):
        store.get_subject("user-3")
    with pytest.raises(SubjectNotFoundError):
        store.delete_subject("user-3")


def test_enrolling_the_same_photo_again_returns_the_existing_face(store: GalleryStore) -> None:
    store.create_subject("ada", None, {})
    first = enrol(store, "ada", 1)
    template, created = store.add_template(
        "ada", MODEL, unit(1), first.photo_sha256, [0, 0, 1, 1], 0.9, False
    )
    assert not created and template.id == first.id
    subject, templates = store.subject_templates("ada", with_embeddings=True)
    assert subject.face_count == 1 and len(templates) == 1
    np.testing.assert_allclose(templates[0].embedding, unit(1))


def test_faces_are_deleted_one_by_one_and_with_their_subject(store: GalleryStore) -> None:
    store.create_subject("ada", None, {})
    first, second = enrol(store, "ada", 1, photo=b"photo one"), enrol(store, "ada", 2)
    store.delete_template("ada", first.id)
    assert store.template_photo(first.id) is None
    with pytest.raises(FaceNotFoundError):
        store.delete_template("ada", first.id)
    assert [t.id for t in store.subject_templates("ada")[1]] == [second.id]
    assert store.delete_subject("ada") == 1
    assert store.count_templates() == 0
    with pytest.raises(SubjectNotFoundError):
        enrol(store, "ada", 3)


def test_photos_are_stored_only_when_given(store: GalleryStore) -> None:
    store.create_subject("ada", None, {})
    kept = enrol(store, "ada", 1, photo=b"jpeg bytes")
    hashed_only = enrol(store, "ada", 2)
    assert store.template_photo(kept.id) == (b"jpeg bytes", False)
    assert store.template_photo(hashed_only.id) is None
    assert {t.id: t.has_photo for t in store.subject_templates("ada")[1]} == {
        kept.id: True,
        hashed_only.id: False,
    }


def test_every_write_raises_the_version_and_logs_the_templates(store: GalleryStore) -> None:
    store.create_subject("ada", None, {})
    start = store.version()
    template = enrol(store, "ada", 1)
    assert store.version() == start + 1
    delta = store.changes_since(start, MODEL)
    assert delta is not None and [t for t, _, _ in delta.upserts] == [template.id] and delta.removed == []
    store.delete_template("ada", template.id)
    delta = store.changes_since(start, MODEL)
    assert delta is not None and delta.upserts == [] and delta.removed == [template.id]
    assert store.changes_since(store.version(), MODEL) is None


def test_a_replica_sees_another_replicas_writes_before_searching(gallery_url: str, tmp_path: Path) -> None:
    writer = Gallery(GalleryStore.open(gallery_url, tmp_path), keep_photos=False)
    reader = Gallery(GalleryStore.open(gallery_url, tmp_path), keep_photos=False)
    writer.store.create_subject("ada", None, {})
    kept = enrol(writer.store, "ada", 1)
    reader.load_index(MODEL, DIM)
    writer.store.create_subject("bob", None, {})
    added = enrol(writer.store, "bob", 2)
    enrol(writer.store, "bob", 3, model=OTHER_MODEL)
    writer.store.delete_template("ada", kept.id)
    index = reader.sync()
    assert len(index) == 1 and added.id in index and kept.id not in index
    assert index.search(unit(2), 1)[0].subject_id == "bob"
    assert reader.other_model_templates == 1
    writer.close()
    reader.close()


def test_the_index_reloads_when_the_database_goes_back_in_time(store: GalleryStore) -> None:
    gallery = Gallery(store, keep_photos=False)
    store.create_subject("ada", None, {})
    enrol(store, "ada", 1)
    gallery.load_index(MODEL, DIM)
    gallery._index.version = 10_000  # as if the database had been restored from an older backup
    assert len(gallery.sync()) == 1 and gallery._index.version == store.version()


def test_verify_refuses_to_compare_across_models(store: GalleryStore) -> None:
    from app.gallery.errors import ModelMismatchError, NoEnrolledFaceError

    gallery = Gallery(store, keep_photos=False)
    store.create_subject("ada", None, {})
    with pytest.raises(NoEnrolledFaceError):
        gallery.verify("ada", unit(1), MODEL)
    enrol(store, "ada", 1, model=OTHER_MODEL)
    with pytest.raises(ModelMismatchError, match="drface gallery reembed"):
        gallery.verify("ada", unit(1), MODEL)
    enrol(store, "ada", 2)
    similarity, _ = gallery.verify("ada", unit(2), MODEL)
    assert similarity == pytest.approx(1.0, abs=1e-6)


def test_sqlite_delete_leaves_no_trace_of_the_template_or_photo_in_the_files(tmp_path: Path) -> None:
    store = GalleryStore.open("", tmp_path)
    store.create_subject("ada", None, {})
    photo = b"PHOTO-" + bytes(range(256)) * 8
    template = enrol(store, "ada", 42, photo=photo)
    embedding = unit(42).astype("<f4").tobytes()

    def files() -> bytes:
        return b"".join(path.read_bytes() for path in tmp_path.iterdir() if path.is_file())

    assert embedding in files() or photo in files()  # written (maybe still in the WAL)
    store.delete_template("ada", template.id)
    assert embedding not in files() and photo not in files()
    store.close()


# -- the index alone ----------------------------------------------------------------------------------------
def brute_force_top_k(embeddings: np.ndarray, subjects: list[str], probe: np.ndarray, k: int) -> list[str]:
    best: dict[str, float] = {}
    for row, subject in enumerate(subjects):
        best[subject] = max(best.get(subject, -2.0), float(embeddings[row] @ probe))
    return sorted(best, key=lambda s: -best[s])[:k]


def test_index_search_is_exact_top_k_over_subjects_with_many_templates() -> None:
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((3000, DIM)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    # Skewed: subject 0 owns many templates, so the most similar templates are often the same subject.
    subjects = [f"s{min(i % 400, i % 7)}" for i in range(len(embeddings))]
    index = TemplateIndex.from_rows(embeddings, [f"t{i}" for i in range(len(embeddings))], subjects, 0)
    for seed in range(20):
        probe = unit(1000 + seed)
        found = index.search(probe, 10)
        assert [c.subject_id for c in found] == brute_force_top_k(embeddings, subjects, probe, 10)
        assert all(a.similarity >= b.similarity for a, b in zip(found, found[1:], strict=False))


def test_index_stays_consistent_through_adds_and_removes() -> None:
    index = TemplateIndex(DIM)
    kept: dict[str, tuple[str, np.ndarray]] = {}
    for number in range(3000):  # grows past the initial capacity
        index.upsert(f"t{number}", f"s{number % 50}", unit(number))
        kept[f"t{number}"] = (f"s{number % 50}", unit(number))
    for number in range(0, 3000, 3):
        assert index.remove(f"t{number}")
        del kept[f"t{number}"]
    assert not index.remove("t0") and len(index) == len(kept)
    ids = list(kept)
    embeddings = np.stack([kept[t][1] for t in ids])
    subjects = [kept[t][0] for t in ids]
    probe = unit(7)
    assert [c.subject_id for c in index.search(probe, 5)] == brute_force_top_k(embeddings, subjects, probe, 5)
    assert index.search(probe, 1000)[-1].subject_id in set(subjects)
    assert len(index.search(probe, 1000)) == 50
