"""1:N identification on real faces: shared faces94 photos (a folder per person), through the HTTP API.

People are split: the first ENROLLED_PEOPLE folders (sorted) are enrolled with ENROLLED_PHOTOS photos each
and identified from their other photos; the remaining people were never enrolled and must come back
`unknown`. Prints rank-1 accuracy (best candidate is the right person), the match rate at the server's
default threshold, and the unknown-rejection rate. The bounds asserted are loose floors: the numbers belong
to the served model, and a better one only raises them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = [pytest.mark.data, pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

ENROLLED_PEOPLE = 12
ENROLLED_PHOTOS = 2
MIN_RANK1 = 0.8
MIN_REJECTION = 0.5


def photos_by_person(root: Path) -> dict[str, list[Path]]:
    def number(path: Path) -> int:
        found = re.findall(r"\d+", path.stem)
        return int(found[-1]) if found else 0

    people = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        photos = sorted(
            (p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"}), key=number
        )
        if len(photos) > ENROLLED_PHOTOS:
            people[folder.name] = photos
    return people


def test_identification_on_shared_faces(data_root: Path, app_factory, capsys) -> None:
    root = data_root / "faces94"
    if not root.is_dir():
        pytest.skip(f"faces94 not found at {root}")
    people = photos_by_person(root)
    enrolled = dict(list(people.items())[:ENROLLED_PEOPLE])
    strangers = dict(list(people.items())[ENROLLED_PEOPLE:])
    assert len(enrolled) == ENROLLED_PEOPLE and strangers

    def identify(client, photo: Path) -> dict:
        files = {"image": (photo.name, photo.read_bytes(), "image/jpeg")}
        response = client.post("/v1/identify", files=files, data={"top_k": "3"})
        assert response.status_code == 200, response.text
        return response.json()

    with app_factory() as client:
        for person, photos in enrolled.items():
            assert client.post("/v1/subjects", json={"id": person}).status_code == 201
            for photo in photos[:ENROLLED_PHOTOS]:
                files = {"image": (photo.name, photo.read_bytes(), "image/jpeg")}
                response = client.post(f"/v1/subjects/{person}/faces", files=files)
                assert response.status_code == 201, response.text
        rank1 = matched = probes = 0
        for person, photos in enrolled.items():
            for photo in photos[ENROLLED_PHOTOS:]:
                answer = identify(client, photo)
                probes += 1
                rank1 += answer["candidates"][0]["subject_id"] == person
                matched += answer["subject_id"] == person
        rejected = stranger_probes = 0
        for photos in strangers.values():
            for photo in photos:
                stranger_probes += 1
                rejected += identify(client, photo)["result"] == "unknown"
        operating_point = answer["operating_point"]
        threshold = answer["threshold"]

    with capsys.disabled():
        print(
            f"\nfaces94 identification: {ENROLLED_PEOPLE} people enrolled, {ENROLLED_PHOTOS} photos each, "
            f"{probes} probes of them, {stranger_probes} probes of {len(strangers)} people never enrolled; "
            f"threshold {threshold:.4f} ({operating_point}):\n"
            f"  rank-1 accuracy {rank1 / probes:.1%}, matched at the threshold {matched / probes:.1%}, "
            f"unknown-rejection {rejected / stranger_probes:.1%}"
        )
    assert rank1 / probes >= MIN_RANK1
    assert rejected / stranger_probes >= MIN_REJECTION
