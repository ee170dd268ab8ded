"""`drface gallery info|reembed`: what the gallery holds, and templates recomputed for the served model.

Templates are tied to the model that made them; after a model change the service searches only the
templates of the new one. `reembed` loads the model the service would serve (DRFACE_WEIGHTS or --weights),
runs each stored photo of an older template through the same pipeline and replaces the template's embedding
in place (same face id), one transaction per template, so running servers pick the changes up and an
interrupted run can simply be started again. Templates whose photo was not kept (the default) cannot be
recomputed: their subjects must be enrolled again.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pydantic import ValidationError

from app.errors import domain_error_to_api
from app.settings import Settings
from model.decode import ImageError
from model.pipeline import FaceError

if TYPE_CHECKING:
    from app.engine import Engine
    from app.gallery.store import GalleryStore


@dataclass(frozen=True)
class ReembedReport:
    model: str
    reembedded: int
    failed: dict[str, str]  # template id -> why its photo gave no face
    without_photo: int


def configure_parser(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="gallery_command", metavar="ACTION", required=True)
    actions.add_parser("info", help="schema version, subjects and templates per model")
    reembed = actions.add_parser(
        "reembed", help="recompute templates of other models from stored photos with the served model"
    )
    reembed.add_argument("--weights", help="model artifact (DRFACE_WEIGHTS, default: shipped)")
    for action in actions.choices.values():
        action.add_argument("--gallery-url", help="DRFACE_GALLERY_URL (default: SQLite in DRFACE_STATE_DIR)")


def reembed_gallery(settings: Settings) -> ReembedReport:
    """Re-embed every template of another model that has a stored photo with the model of `settings`."""
    from app.engine import Engine
    from app.gallery.store import GalleryStore

    engine = Engine.load(settings)
    store = GalleryStore.open(settings.gallery_url, settings.state_dir)
    try:
        return reembed(engine, store)
    finally:
        store.close()
        engine.close()


def reembed(engine: Engine, store: GalleryStore) -> ReembedReport:
    """Replace the embedding of each template of another model that has a stored photo with `engine`'s."""
    from app.gallery.service import largest_face, served_model

    model = served_model(engine)
    template_ids, without_photo = store.templates_to_reembed(model)
    done, failed = 0, {}
    for template_id in template_ids:
        stored = store.template_photo(template_id)
        if stored is None:  # deleted meanwhile
            continue
        photo, aligned = stored
        try:
            face = largest_face(engine, photo, aligned)
        except (ImageError, FaceError) as exc:  # e.g. the new detector finds no face in it
            failed[template_id] = domain_error_to_api(exc).message
            continue
        assert face.embedding is not None
        box = np.round(face.face.box_xyxy.astype(float), 2).tolist()
        score = None if face.face.score is None else round(face.face.score, 4)
        done += store.replace_embedding(template_id, model, face.embedding, box, score)
    return ReembedReport(model.label, done, failed, without_photo)


def gallery_info(settings: Settings) -> str:
    from app.gallery.store import GalleryStore

    store = GalleryStore.open(settings.gallery_url, settings.state_dir)
    try:
        lines = [f"gallery: {store.description}, schema version {store.schema_version()}"]
        lines.append(f"templates: {store.count_templates()}, gallery version {store.version()}")
        for (name, version), count in store.templates_per_model().items():
            lines.append(f"  {name}@{version}: {count} templates")
    finally:
        store.close()
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "weights", None):
        os.environ["DRFACE_WEIGHTS"] = args.weights
    if args.gallery_url:
        os.environ["DRFACE_GALLERY_URL"] = args.gallery_url
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"drface gallery: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    if args.gallery_command == "info":
        print(gallery_info(settings))
        return 0
    report = reembed_gallery(settings)
    print(f"re-embedded {report.reembedded} templates with {report.model}")
    for template_id, reason in report.failed.items():
        print(f"  face {template_id}: not re-embedded: {reason}", file=sys.stderr)
    if report.without_photo:
        print(
            f"{report.without_photo} templates of other models have no stored photo: enrol their subjects "
            "again (POST /v1/subjects/{id}/faces); until then they are not searched",
            file=sys.stderr,
        )
    return 1 if report.failed else 0
