"""A corpus of awkward and hostile inputs, generated from a CFP photo; each gets its documented answer.

Valid-but-unusual images (CMYK, 16-bit, RGBA, EXIF-rotated, grayscale, GIF, WebP) must decode and embed the
face (200); broken or hostile ones get their 4xx with the one error shape; the server stays ready.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from service_testkit import jpeg, png

pytestmark = [pytest.mark.data, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

MAX_FACES = 4
MAX_UPLOAD_BYTES = 2 * 1024 * 1024  # small, so over-limit uploads stay cheap to build


@dataclass
class Case:
    """One request and the answer it must get (`code` None: success)."""

    status: int
    code: str | None
    path: str = "/v1/embed"
    files: dict | None = None
    data: dict | None = None
    json: object = None
    content: bytes | None = None
    headers: dict = field(default_factory=dict)
    check: Callable[[dict], None] | None = None  # extra check on a 200 body
    mentions: str | None = None  # the error message must name this (the field at fault)


def upload(
    image: bytes, name: str = "image", filename: str = "photo", mime: str = "application/octet-stream"
):
    return {name: (filename, image, mime)}


def pil_bytes(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny valid-looking PNG whose header claims width x height (a decompression bomb's calling card)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat_data = zlib.compress(b"\x00" * 64)
    idat = (
        struct.pack(">I", len(idat_data))
        + b"IDAT"
        + idat_data
        + struct.pack(">I", zlib.crc32(b"IDAT" + idat_data))
    )
    return b"\x89PNG\r\n\x1a\n" + chunk + idat + b"\x00\x00\x00\x00IEND\xaeB`\x82"


def face_grid(face_bgr: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """rows x columns copies of the photo in one image: that many faces."""
    return np.vstack([np.hstack([face_bgr] * columns)] * rows)


def expect_one_face_near(box: list[float]) -> Callable[[dict], None]:
    def check(body: dict) -> None:
        assert len(body["faces"]) == 1
        assert np.allclose(body["faces"][0]["box"], box, atol=6), (body["faces"][0]["box"], box)

    return check


def build_corpus(face_a: bytes, face_a_bgr: np.ndarray, reference_box: list[float]) -> dict[str, Case]:
    rgb = Image.fromarray(cv2.cvtColor(face_a_bgr, cv2.COLOR_BGR2RGB))
    one_face = expect_one_face_near(reference_box)
    b64 = base64.b64encode(face_a).decode()
    gif_frames = [rgb.convert("P"), rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT).convert("P")]
    # EXIF orientation 6 = "rotate 90 degrees clockwise to display": store pixels turned counter-clockwise.
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = pil_bytes(rgb.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif, quality=95)
    rgba = np.dstack([face_a_bgr, np.full(face_a_bgr.shape[:2], 255, np.uint8)])
    rgba[:, :10] = (0, 0, 0, 0)  # a transparent band on the grey border: composited onto white
    over_limit = face_a + b"\0" * (MAX_UPLOAD_BYTES + 1 - len(face_a))
    return {
        # -- request shape -----------------------------------------------------------------------------
        "empty_body": Case(422, "invalid_request", content=b""),
        "empty_json_body": Case(
            422, "invalid_request", content=b"", headers={"content-type": "application/json"}
        ),
        "plain_text_body": Case(
            415, "unsupported_media_type", content=b"hello", headers={"content-type": "text/plain"}
        ),
        "raw_jpeg_body": Case(
            415, "unsupported_media_type", content=face_a, headers={"content-type": "image/jpeg"}
        ),
        "json_not_an_object": Case(422, "invalid_request", json=[b64]),
        "json_broken": Case(
            422, "invalid_request", content=b'{"image": ', headers={"content-type": "application/json"}
        ),
        "json_wrong_field_name": Case(422, "invalid_request", json={"img": b64}),
        "json_image_not_a_string": Case(422, "invalid_request", json={"image": 12345}),
        "json_unknown_option": Case(422, "invalid_request", json={"image": b64, "detect_everything": True}),
        "invalid_base64": Case(422, "invalid_request", json={"image": "this is %%% not base64!"}),
        "multipart_wrong_field_name": Case(422, "invalid_request", files=upload(face_a, name="file")),
        # A part without a filename is the file's bytes: base64 text there is not an image.
        "multipart_image_as_text_field": Case(415, "unsupported_media_type", files={"image": (None, b64)}),
        "multipart_bad_option_value": Case(
            422, "invalid_request", files=upload(face_a), data={"aligned": "maybe"}
        ),
        "verify_missing_second_image": Case(
            422, "invalid_request", path="/v1/verify", files=upload(face_a, "image1")
        ),
        "verify_threshold_out_of_range": Case(
            422,
            "invalid_request",
            path="/v1/verify",
            files={**upload(face_a, "image1"), **upload(face_a, "image2")},
            data={"threshold": "2"},
        ),
        "region_map_unknown_format": Case(
            422, "invalid_request", path="/v1/region-map", json={"image": b64, "format": "bmp"}
        ),
        "region_map_face_index_out_of_range": Case(
            422, "invalid_request", path="/v1/region-map", json={"image": b64, "face_index": 3}
        ),
        "aligned_but_not_112": Case(422, "invalid_request", files=upload(face_a), data={"aligned": "true"}),
        # -- strict parsing: no guessing at what the client meant ------------------------------------
        "json_threshold_true": Case(
            422,
            "invalid_request",
            path="/v1/verify",
            json={"image1": b64, "image2": b64, "threshold": True},
            mentions="threshold",
        ),
        "json_duplicate_field": Case(
            422,
            "invalid_request",
            content=b'{"image": "%s", "region_map": true, "region_map": false}' % b64.encode(),
            headers={"content-type": "application/json"},
            mentions="region_map",
        ),
        "json_nested_50k_deep": Case(
            422,
            "invalid_request",
            content=b"[" * 50_000 + b"]" * 50_000,
            headers={"content-type": "application/json"},
            mentions="nested",
        ),
        "json_nested_50k_deep_in_an_extra_field": Case(
            422,
            "invalid_request",
            content=b'{"image": "%s", "extra": ' % b64.encode() + b"[" * 50_000 + b"]" * 50_000 + b"}",
            headers={"content-type": "application/json"},
            mentions="nested",
        ),
        "multipart_duplicate_field": Case(
            422,
            "invalid_request",
            path="/v1/verify",
            files=[
                ("image1", ("a.jpg", face_a, "image/jpeg")),
                ("image2", ("b.jpg", face_a, "image/jpeg")),
                ("threshold", (None, b"0.1")),
                ("threshold", (None, b"0.9")),
            ],
            mentions="threshold",
        ),
        "multipart_duplicate_file": Case(
            422,
            "invalid_request",
            files=[("image", ("a.jpg", face_a, "image/jpeg")), ("image", ("b.jpg", face_a, "image/jpeg"))],
            mentions="image",
        ),
        # No filename (httpx drops an empty one; curl -F 'image=<a.jpg'; a generated client's bare File):
        # the field name says it is the image.
        "multipart_file_without_filename": Case(200, None, files=upload(face_a, filename=""), check=one_face),
        "multipart_threshold_null": Case(
            200,
            None,
            path="/v1/verify",
            files={**upload(face_a, name="image1"), **upload(face_a, name="image2")},
            data={"threshold": "null"},
            check=lambda body: body["verified"] is True,
        ),
        # -- sizes ------------------------------------------------------------------------------------
        "over_limit_upload": Case(413, "too_large", files=upload(over_limit)),
        "over_limit_request_body": Case(
            413, "too_large", files=upload(over_limit + b"\0" * MAX_UPLOAD_BYTES)
        ),
        "over_limit_base64": Case(413, "too_large", json={"image": base64.b64encode(over_limit).decode()}),
        "png_header_claims_100000x100000": Case(
            413, "too_large", files=upload(png_claiming(100_000, 100_000))
        ),
        # -- broken or unsupported files ---------------------------------------------------------------
        "empty_file": Case(400, "bad_image", files=upload(b"")),
        "text_file_as_image": Case(415, "unsupported_media_type", files=upload(b"just some text\n" * 10)),
        "tiff_file": Case(415, "unsupported_media_type", files=upload(pil_bytes(rgb, "TIFF"))),
        "truncated_jpeg": Case(400, "bad_image", files=upload(face_a[: len(face_a) // 2])),
        "corrupt_png_data": Case(400, "bad_image", files=upload(png_claiming(300, 300))),
        "animated_gif": Case(
            415,
            "unsupported_media_type",
            files=upload(pil_bytes(gif_frames[0], "GIF", save_all=True, append_images=gif_frames[1:])),
        ),
        # -- valid images without a usable face ----------------------------------------------------------
        "thin_strip_40000x1": Case(400, "no_face", files=upload(png(np.full((1, 40000, 3), 90, np.uint8)))),
        "thin_strip_1x40000": Case(400, "no_face", files=upload(png(np.full((40000, 1, 3), 90, np.uint8)))),
        "thin_strip_65535x2": Case(400, "no_face", files=upload(png(np.full((2, 65535, 3), 90, np.uint8)))),
        "one_pixel_image": Case(400, "no_face", files=upload(png(np.full((1, 1, 3), 200, np.uint8)))),
        "no_face": Case(
            400, "no_face", files=upload(jpeg(cv2.GaussianBlur(face_a_bgr[::-1, ::-1], (0, 0), 25)))
        ),
        "many_faces": Case(400, "too_many_faces", files=upload(jpeg(face_grid(face_a_bgr, 2, 3)))),
        # -- valid images in unusual encodings: decoded, face found ----------------------------------------
        "many_faces_verify_uses_largest": Case(
            200,
            None,
            path="/v1/verify",
            files={**upload(jpeg(face_grid(face_a_bgr, 2, 3)), "image1"), **upload(face_a, "image2")},
        ),
        "cmyk_jpeg": Case(
            200, None, files=upload(pil_bytes(rgb.convert("CMYK"), "JPEG", quality=95)), check=one_face
        ),
        "png_16_bit": Case(200, None, files=upload(png(face_a_bgr.astype(np.uint16) * 257)), check=one_face),
        "rgba_png": Case(200, None, files=upload(png(rgba)), check=one_face),
        "exif_rotated_jpeg": Case(200, None, files=upload(rotated), check=one_face),
        "grayscale_jpeg": Case(
            200, None, files=upload(jpeg(cv2.cvtColor(face_a_bgr, cv2.COLOR_BGR2GRAY))), check=one_face
        ),
        "single_frame_gif": Case(200, None, files=upload(pil_bytes(gif_frames[0], "GIF")), check=one_face),
        "webp": Case(200, None, files=upload(pil_bytes(rgb, "WEBP", quality=95)), check=one_face),
    }


CASE_NAMES = [
    "empty_body",
    "empty_json_body",
    "plain_text_body",
    "raw_jpeg_body",
    "json_not_an_object",
    "json_broken",
    "json_wrong_field_name",
    "json_image_not_a_string",
    "json_unknown_option",
    "invalid_base64",
    "multipart_wrong_field_name",
    "multipart_image_as_text_field",
    "multipart_bad_option_value",
    "verify_missing_second_image",
    "verify_threshold_out_of_range",
    "region_map_unknown_format",
    "region_map_face_index_out_of_range",
    "aligned_but_not_112",
    "json_threshold_true",
    "json_duplicate_field",
    "json_nested_50k_deep",
    "json_nested_50k_deep_in_an_extra_field",
    "multipart_duplicate_field",
    "multipart_duplicate_file",
    "multipart_file_without_filename",
    "multipart_threshold_null",
    "over_limit_upload",
    "over_limit_request_body",
    "over_limit_base64",
    "png_header_claims_100000x100000",
    "empty_file",
    "text_file_as_image",
    "tiff_file",
    "truncated_jpeg",
    "corrupt_png_data",
    "animated_gif",
    "one_pixel_image",
    "thin_strip_40000x1",
    "thin_strip_1x40000",
    "thin_strip_65535x2",
    "no_face",
    "many_faces",
    "many_faces_verify_uses_largest",
    "cmyk_jpeg",
    "png_16_bit",
    "rgba_png",
    "exif_rotated_jpeg",
    "grayscale_jpeg",
    "single_frame_gif",
    "webp",
]


@pytest.fixture(scope="module")
def client(app_factory, cfp_root) -> Iterator[TestClient]:
    with app_factory(max_faces=MAX_FACES, max_upload_bytes=MAX_UPLOAD_BYTES, trace_network=False) as client:
        yield client


@pytest.fixture(scope="module")
def corpus(client: TestClient, face_a: bytes, face_a_bgr: np.ndarray) -> dict[str, Case]:
    reference = client.post("/v1/embed", files=upload(face_a)).json()["faces"][0]["box"]
    return build_corpus(face_a, face_a_bgr, reference)


def test_corpus_is_complete(corpus: dict[str, Case]) -> None:
    assert sorted(corpus) == sorted(CASE_NAMES)
    assert sum(case.code is not None for case in corpus.values()) >= 20


@pytest.mark.parametrize("name", CASE_NAMES)
def test_input_gets_its_documented_answer(client: TestClient, corpus: dict[str, Case], name: str) -> None:
    case = corpus[name]
    response = client.post(
        case.path,
        files=case.files,
        data=case.data,
        json=case.json,
        content=case.content,
        headers=case.headers,
    )
    assert response.status_code == case.status, response.text
    body = response.json()
    if case.code is None:
        if case.check is not None:
            case.check(body)
        return
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == case.code
    assert body["error"]["message"] and "Traceback" not in response.text
    if case.mentions is not None:
        assert case.mentions in body["error"]["message"], body["error"]["message"]


def test_server_is_still_ready_after_the_corpus(client: TestClient) -> None:
    # Runs after the parametrized cases (pytest keeps definition order within a module).
    assert client.get("/readyz").status_code == 200
    assert client.get("/healthz").status_code == 200
