"""A client generated from the live server's /openapi.json by openapi-python-client works as generated.

What an integrator does: fetch the schema, run the generator (the pinned release of the test extra, default
settings, no hand edits), import the package and call every operation with real photos, on a server without
API keys and on one with keys.
"""

from __future__ import annotations

import base64
import importlib
import inspect
import io
import subprocess
import sys
import typing
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from service_testkit import KEYED_SERVER_KEY

pytestmark = [pytest.mark.slow, pytest.mark.data, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def generate_client(base_url: str, directory: Path, package: str) -> ModuleType:
    """Generate a client package from the server's schema into `directory` and import it."""
    schema = directory / f"{package}.json"
    schema.write_bytes(httpx.get(f"{base_url}/openapi.json", timeout=10).content)
    # Only setting: no post-generation hooks (they run `ruff` from PATH, which a venv need not have).
    config = directory / "generator.yaml"
    config.write_text("post_hooks: []\n")
    command = [
        sys.executable,
        "-m",
        "openapi_python_client",
        "generate",
        f"--path={schema}",
        f"--output-path={directory / package}",
        "--meta=none",
        f"--config={config}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stdout + result.stderr, result.stdout + result.stderr
    sys.path.insert(0, str(directory))
    try:
        importlib.invalidate_caches()
        return importlib.import_module(package)
    finally:
        sys.path.remove(str(directory))


def submodule(client: ModuleType, name: str) -> ModuleType:
    return importlib.import_module(f"{client.__name__}.{name}")


@pytest.fixture(scope="module", params=["without_keys", "with_keys"])
def generated(request, tmp_path_factory, server_url: str) -> tuple[ModuleType, object]:
    """(client package, a client object of it for the server) for a server without and with API keys."""
    package = f"drface_client_{request.param}"
    if request.param == "without_keys":
        base_url = server_url
        package_module = generate_client(base_url, tmp_path_factory.mktemp(package), package)
        return package_module, package_module.Client(base_url=base_url, timeout=60)
    base_url = request.getfixturevalue("keyed_server_url")
    package_module = generate_client(base_url, tmp_path_factory.mktemp(package), package)
    # As generated: the key goes out as `Authorization: Bearer <key>`.
    client = package_module.AuthenticatedClient(base_url=base_url, token=KEYED_SERVER_KEY, timeout=60)
    return package_module, client


def photo_file(package: ModuleType, data: bytes, file_name: str | None = "photo.jpg"):
    return submodule(package, "types").File(
        payload=io.BytesIO(data), file_name=file_name, mime_type="image/jpeg"
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def test_security_is_declared_only_where_the_server_has_keys(generated) -> None:
    package, client = generated
    annotation = inspect.signature(submodule(package, "api.faces.embed").sync).parameters["client"].annotation
    accepted = set(typing.get_args(annotation)) or {annotation}
    if isinstance(client, package.AuthenticatedClient):
        assert accepted == {package.AuthenticatedClient}
    else:
        assert accepted == {package.AuthenticatedClient, package.Client}


def test_operations_answer_health_readiness_metrics_and_model(generated) -> None:
    package, client = generated
    api = lambda name: submodule(package, f"api.{name}")  # noqa: E731
    health = api("operations.healthz").sync(client=client)
    assert health.status.value == "ok" and health.model
    assert api("operations.readyz").sync(client=client).status.value == "ready"
    assert "drface_ready 1.0" in api("operations.metrics").sync(client=client)
    model = api("faces.get_model").sync(client=client)
    assert model.embedding_dim > 0 and model.threshold == model.thresholds[model.operating_point]


def test_embed_as_multipart_and_as_json_give_the_same_face(generated, face_a: bytes) -> None:
    package, client = generated
    models = submodule(package, "models")
    multipart = submodule(package, "api.faces.embed").sync(
        client=client, body=models.EmbedForm(image=photo_file(package, face_a))
    )
    as_json = submodule(package, "api.faces.embed_json").sync(
        client=client, body=models.EmbedRequest(image=b64(face_a))
    )
    assert isinstance(multipart, models.EmbedResponse), multipart
    assert len(multipart.faces) == 1 and len(as_json.faces) == 1
    assert multipart.faces[0].box == as_json.faces[0].box
    assert multipart.faces[0].embedding == pytest.approx(as_json.faces[0].embedding, abs=1e-5)


def test_a_file_without_a_file_name_is_the_image(generated, face_a: bytes) -> None:
    package, client = generated
    models = submodule(package, "models")
    answer = submodule(package, "api.faces.embed").sync(
        client=client,
        body=models.EmbedForm(image=photo_file(package, face_a, file_name=None), region_map=True),
    )
    assert isinstance(answer, models.EmbedResponse), answer
    assert answer.faces[0].region_map


def test_verify_as_multipart_and_as_json(generated, face_a: bytes, face_b: bytes) -> None:
    package, client = generated
    models = submodule(package, "models")
    different = submodule(package, "api.faces.verify").sync(
        client=client,
        body=models.VerifyForm(
            image1=photo_file(package, face_a), image2=photo_file(package, face_b), threshold=None
        ),
    )
    same = submodule(package, "api.faces.verify_json").sync(
        client=client, body=models.VerifyRequest(image1=b64(face_a), image2=b64(face_a), threshold=0.5)
    )
    assert isinstance(different, models.VerifyResponse), different
    assert different.similarity < same.similarity and same.verified and same.operating_point == "custom"


def test_region_map_as_json_and_as_png(generated, face_a: bytes) -> None:
    package, client = generated
    models = submodule(package, "models")
    from_form = submodule(package, "api.faces.region_map").sync(
        client=client, body=models.RegionMapForm(image=photo_file(package, face_a))
    )
    from_json = submodule(package, "api.faces.region_map_json").sync(
        client=client, body=models.RegionMapRequest(image=b64(face_a))
    )
    picture = submodule(package, "api.faces.region_map_png").sync(
        client=client, body=models.RegionMapForm(image=photo_file(package, face_a))
    )
    assert isinstance(from_form, models.RegionMapResponse), from_form
    assert from_form.layers and [layer.mask for layer in from_form.layers] == [
        layer.mask for layer in from_json.layers
    ]
    assert picture.payload.read().startswith(PNG_SIGNATURE)


def test_errors_parse_into_the_error_model(generated) -> None:
    package, client = generated
    models = submodule(package, "models")
    answer = submodule(package, "api.faces.embed_json").sync_detailed(
        client=client, body=models.EmbedRequest(image=b64(b"not a photo"))
    )
    assert answer.status_code == 415
    assert answer.parsed.error.code == models.ErrorCode.UNSUPPORTED_MEDIA_TYPE


def test_with_keys_a_client_without_the_key_gets_401(generated) -> None:
    package, client = generated
    if not isinstance(client, package.AuthenticatedClient):
        pytest.skip("the server has no keys")
    anonymous = package.Client(base_url=client._base_url, timeout=60)
    answer = submodule(package, "api.faces.get_model").sync_detailed(client=anonymous)
    assert answer.status_code == 401
    assert answer.parsed.error.code == submodule(package, "models").ErrorCode.UNAUTHORIZED
    assert answer.headers["www-authenticate"] == "ApiKey, Bearer"


def test_gallery_enrol_verify_identify_delete(generated, face_a: bytes, face_b: bytes) -> None:
    package, client = generated
    models = submodule(package, "models")
    api = lambda name: submodule(package, f"api.gallery.{name}")  # noqa: E731
    subject = api("create_subject").sync(client=client, body=models.SubjectCreate(name="person A"))
    assert isinstance(subject, models.SubjectOut), subject
    enrolled = api("enrol_face").sync(
        subject.id, client=client, body=models.EnrolForm(image=photo_file(package, face_a))
    )
    assert isinstance(enrolled, models.EnrolResponse), enrolled
    assert enrolled.created and enrolled.subject_id == subject.id
    same = api("verify_subject").sync(
        subject.id, client=client, body=models.ProbeForm(image=photo_file(package, face_a))
    )
    other = api("verify_subject").sync(
        subject.id, client=client, body=models.ProbeForm(image=photo_file(package, face_b))
    )
    assert same.verified and not other.verified and other.similarity < same.similarity
    found = api("identify").sync(client=client, body=models.IdentifyForm(image=photo_file(package, face_a)))
    assert found.result == models.IdentifyResponseResult.MATCH and found.subject_id == subject.id
    assert api("delete_subject").sync_detailed(subject.id, client=client).status_code == 204
    missing = api("get_subject").sync_detailed(subject.id, client=client)
    assert missing.status_code == 404 and missing.parsed.error.code == models.ErrorCode.NOT_FOUND


def test_the_key_also_works_as_x_api_key(generated) -> None:
    package, client = generated
    if not isinstance(client, package.AuthenticatedClient):
        pytest.skip("the server has no keys")
    as_header = package.AuthenticatedClient(
        base_url=client._base_url, token=KEYED_SERVER_KEY, prefix="", auth_header_name="X-API-Key", timeout=60
    )
    assert submodule(package, "api.faces.get_model").sync_detailed(client=as_header).status_code == 200
