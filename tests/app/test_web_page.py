"""The try-it page at `/`: served by the app itself, and driven in a real Chromium against a real server.

The browser tests need Chromium and its driver (Debian: `apt-get install chromium chromium-driver`), selenium
(the `test` extra) and the shared face data; they are skipped where any is missing. Set DRFACE_SCREENSHOT_DIR
to keep the screenshots they take (1280x800 and 390x844).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from drawn_faces import two_drawn_people
from fastapi.testclient import TestClient
from service_testkit import PERSON_A, PERSON_B, make_settings, uvicorn_server

from app.main import create_app
from app.region_png import CAPTION_PX, MARGIN_PX, PANEL_SCALE, PANELS_PER_ROW, region_colors
from model.align import ARCFACE_TEMPLATE_112, FACE_SIZE

STABLE_IDS = ("image1", "image2", "verify", "result", "regions1", "regions2", "error")
SCREEN_SIZES = {"laptop": (1280, 800), "phone": (390, 844)}
API_KEY = "page-test-key"
WAIT_S = 120  # generous: the shared CI machine may be busy; tests never assert on time


# -- the page as the app serves it (no model needed) -------------------------------------------------------
@pytest.fixture(scope="module")
def page_client() -> Iterator[TestClient]:
    """The app with API keys set, without starting its lifespan: the page needs no model."""
    yield TestClient(create_app(make_settings(api_keys=API_KEY)))


def test_page_is_served_at_the_root_with_its_stable_ids(page_client: TestClient) -> None:
    response = page_client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    for element_id in STABLE_IDS:
        assert f'id="{element_id}"' in response.text


def test_page_stays_open_when_the_server_has_api_keys(page_client: TestClient) -> None:
    assert page_client.get("/").status_code == 200
    assert page_client.get("/static/app.js").status_code == 200
    assert page_client.get("/v1/model").status_code == 401


def test_every_asset_of_the_page_is_served_by_the_app(page_client: TestClient) -> None:
    html = page_client.get("/").text
    references = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert references, "the page links its script and stylesheet"
    for reference in references:
        assert "//" not in reference, f"{reference} is not served by the app (no CDN)"
        assert page_client.get("/" + reference).status_code == 200, reference
    script = page_client.get("/static/app.js").text
    assert "http://" not in script and "https://" not in script


def test_page_uses_only_the_public_v1_api(page_client: TestClient) -> None:
    script = page_client.get("/static/app.js").text
    called = set(re.findall(r'callApi\("([^"]+)"', script))
    assert called == {
        "v1/model",
        "v1/verify",
        "v1/region-map",
    }  # relative: the page also works under a prefix


def test_page_keeps_the_api_key_in_session_storage_and_sends_it_as_a_header(page_client: TestClient) -> None:
    script = page_client.get("/static/app.js").text
    assert "sessionStorage" in script and '"X-API-Key"' in script
    assert "localStorage" not in script and "URLSearchParams" not in script


def test_page_is_not_part_of_the_api_reference(page_client: TestClient) -> None:
    paths = page_client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(path.startswith("/static") for path in paths)


def test_model_info_gives_the_region_png_colours_and_the_alignment_template(app_factory) -> None:
    with app_factory() as client:
        info = client.get("/v1/model").json()
    expected = [f"#{r:02x}{g:02x}{b:02x}" for b, g, r in region_colors(info["region_num"]).tolist()]
    assert info["region_colors"] == expected
    assert np.allclose(info["aligned_landmarks"], ARCFACE_TEMPLATE_112, atol=1e-3)


# -- a real Chromium on a real server ------------------------------------------------------------------------
def _browser_paths() -> tuple[str, str] | None:
    browser = os.environ.get("DRFACE_CHROMIUM") or shutil.which("chromium")
    driver = os.environ.get("DRFACE_CHROMEDRIVER") or shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A headless Chromium driven through chromedriver; skips where either is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (test extra)")
    paths = _browser_paths()
    if paths is None:
        pytest.skip("Chromium and chromedriver not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=paths[1]))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("DRFACE_SCREENSHOT_DIR")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def photos(cfp_root: Path) -> tuple[Path, Path]:
    """Two real photos of two people, as a person would pick them."""
    return (cfp_root / "Data" / "Images" / PERSON_A, cfp_root / "Data" / "Images" / PERSON_B)


def _open_page(driver: Any, base_url: str, size: tuple[int, int] = SCREEN_SIZES["laptop"]) -> None:
    _set_viewport(driver, *size)
    driver.get(base_url + "/")
    driver.execute_script("sessionStorage.clear()")
    driver.refresh()


def _set_viewport(driver: Any, width: int, height: int) -> None:
    """Make the page's viewport (not the window) width x height CSS pixels."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
    )


def _choose(driver: Any, first: Path, second: Path) -> None:
    driver.find_element("id", "image1").send_keys(str(first))
    driver.find_element("id", "image2").send_keys(str(second))


def _wait_until(driver: Any, script: str) -> None:
    """Wait until the JavaScript expression `script` is true in the page (`byId(id)` finds an element)."""
    from selenium.webdriver.support.ui import WebDriverWait

    page_script = f"const byId = (id) => document.getElementById(id); return Boolean({script});"
    WebDriverWait(driver, WAIT_S).until(lambda d: d.execute_script(page_script))


def _press_verify_and_wait(driver: Any) -> None:
    """Click Verify and wait until the page shows the region maps or an error."""
    driver.find_element("id", "verify").click()
    _wait_until(driver, "!byId('verify').disabled && (!byId('regions').hidden || !byId('error').hidden)")


def _answer_with(driver: Any, route: str, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
    """Make the page's fetch of `route` (e.g. "v1/verify") get this answer; other routes reach the server."""
    driver.execute_script(
        """
        const [route, status, body, headers] = arguments;
        const earlierFetch = window.fetch;
        window.fetch = (url, options) => String(url).endsWith(route)
          ? Promise.resolve(new Response(JSON.stringify(body),
              {status, headers: {'Content-Type': 'application/json', ...headers}}))
          : earlierFetch(url, options);
        """,
        route,
        status,
        body,
        headers,
    )


def _text(driver: Any, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def _error_shown(driver: Any) -> str:
    return driver.execute_script(
        "const e = document.getElementById('error'); return e.hidden ? '' : e.textContent;"
    )


_PAINTED_CANVASES = """
const view = document.getElementById(arguments[0]);
return Array.from(view.querySelectorAll('canvas')).map((canvas) => {
  const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  const colours = new Set();
  for (let i = 0; i < pixels.length; i += 4 * 37) {
    colours.add(pixels[i] * 65536 + pixels[i + 1] * 256 + pixels[i + 2]);
  }
  return colours.size;
});
"""

_LAYOUT_PROBLEMS = """
const problems = [];
const root = document.documentElement;
if (root.scrollWidth > window.innerWidth) {
  problems.push(`page is ${root.scrollWidth}px wide in ${window.innerWidth}px`);
}
const boxes = ['.top h1', '.key', 'label[for=image1]', 'label[for=image2]', '#photo1', '#photo2', '#verify',
  '#result', '#legend', '#regions1', '#regions2', '.panel', '.legend-item', '.result dl > div']
  .flatMap((selector) => Array.from(document.querySelectorAll(selector)))
  .filter((element) => element.getClientRects().length);
for (const element of boxes) {
  const r = element.getBoundingClientRect();
  if (r.right > window.innerWidth + 0.5 || r.left < -0.5) {
    problems.push(`${element.id || element.className} sticks out`);
  }
}
for (let i = 0; i < boxes.length; i += 1) {
  for (let j = i + 1; j < boxes.length; j += 1) {
    const [a, b] = [boxes[i], boxes[j]];
    if (a.contains(b) || b.contains(a)) continue;
    const [p, q] = [a.getBoundingClientRect(), b.getBoundingClientRect()];
    const w = Math.min(p.right, q.right) - Math.max(p.left, q.left);
    const h = Math.min(p.bottom, q.bottom) - Math.max(p.top, q.top);
    if (w > 1 && h > 1) problems.push(`${a.id || a.className} overlaps ${b.id || b.className}`);
  }
}
return problems;
"""


@pytest.mark.slow
@pytest.mark.data
def test_two_photos_show_the_verdict_and_both_region_maps(
    browser: Any, server_url: str, photos: tuple[Path, Path], screenshot_dir: Path
) -> None:
    with httpx.Client(base_url=server_url, timeout=60) as api:
        info = api.get("/v1/model").json()
        files = {f"image{i + 1}": photo.read_bytes() for i, photo in enumerate(photos)}
        expected = api.post("/v1/verify", files=files).json()
    _open_page(browser, server_url)
    _choose(browser, *photos)
    _press_verify_and_wait(browser)

    assert _error_shown(browser) == ""
    result = _text(browser, "result")
    assert ("Same person" if expected["verified"] else "Different people") in result
    assert f"{expected['similarity']:.4f}" in result
    assert f"{expected['threshold']:.4f}" in result
    assert expected["operating_point"] in result  # e.g. far_1e-3, with what it means
    assert "held-out people" in result
    for view in ("regions1", "regions2"):
        painted = browser.execute_script(_PAINTED_CANVASES, view)
        assert len(painted) == 1 + len(info["drconv_layers"]), "the aligned face, then one panel per layer"
        assert all(colours > 8 for colours in painted), "every panel shows a face with its regions"
        layers = browser.execute_script(
            f"return Array.from(document.querySelectorAll('#{view} canvas.layer')).map(c => c.dataset.layer)"
        )
        assert layers == info["drconv_layers"]
    legend = browser.execute_script(
        "return Array.from(document.querySelectorAll('#legend .swatch')).map(s => s.dataset.color)"
    )
    assert legend == info["region_colors"]

    _check_layout_and_screenshot(browser, screenshot_dir, "page")


def _check_layout_and_screenshot(driver: Any, folder: Path, prefix: str) -> None:
    """At each screen size: nothing overlaps or sticks out; save the screen and the whole page as PNGs."""
    for name, (width, height) in SCREEN_SIZES.items():
        _set_viewport(driver, width, height)
        assert driver.execute_script(_LAYOUT_PROBLEMS) == [], name
        driver.save_screenshot(str(folder / f"{prefix}-{name}.png"))
        page_height = driver.execute_script("return document.documentElement.scrollHeight")
        _set_viewport(driver, width, int(page_height))
        driver.save_screenshot(str(folder / f"{prefix}-{name}-full.png"))
    _set_viewport(driver, *SCREEN_SIZES["laptop"])


@pytest.mark.slow
def test_drawn_faces_get_a_verdict_and_region_maps(
    browser: Any, server_url: str, screenshot_dir: Path, tmp_path: Path
) -> None:
    """No real person: this run's laptop screenshot is the one in docs/ (see README)."""
    files = []
    for index, face in enumerate(two_drawn_people(), start=1):
        files.append(tmp_path / f"drawn-face-{index}.png")
        cv2.imwrite(str(files[-1]), face)
    _open_page(browser, server_url)
    _choose(browser, *files)
    _press_verify_and_wait(browser)
    assert _error_shown(browser) == ""
    assert "similarity" in _text(browser, "result")
    for view in ("regions1", "regions2"):
        assert browser.execute_script(f"return document.querySelectorAll('#{view} canvas.layer').length") > 0
    _check_layout_and_screenshot(browser, screenshot_dir, "drawn")


@pytest.mark.slow
def test_region_panels_look_like_the_png_endpoints(browser: Any, server_url: str, tmp_path: Path) -> None:
    """Same aligned face, same colours, same blend: the page draws what `format=png` renders."""
    photo = tmp_path / "drawn-face.png"
    cv2.imwrite(str(photo), two_drawn_people()[0])
    with httpx.Client(base_url=server_url, timeout=60) as api:
        answer = api.post("/v1/region-map", files={"image": photo.read_bytes()}, data={"format": "png"})
    picture = cv2.imdecode(np.frombuffer(answer.content, np.uint8), cv2.IMREAD_COLOR)
    _open_page(browser, server_url)
    _choose(browser, photo, photo)
    _press_verify_and_wait(browser)
    urls = browser.execute_script(
        "return Array.from(document.querySelectorAll('#regions1 canvas')).map(c => c.toDataURL('image/png'))"
    )
    side = FACE_SIZE * PANEL_SCALE
    for index, url in enumerate(urls):
        x = MARGIN_PX + (index % PANELS_PER_ROW) * (side + MARGIN_PX)
        y = MARGIN_PX + (index // PANELS_PER_ROW) * (side + CAPTION_PX + MARGIN_PX) + CAPTION_PX
        server_panel = picture[y : y + side, x : x + side]
        page_panel = cv2.imdecode(
            np.frombuffer(base64.b64decode(url.split(",")[1]), np.uint8), cv2.IMREAD_COLOR
        )
        small = [
            cv2.resize(p, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA).astype(float)
            for p in (server_panel, page_panel)
        ]
        assert np.abs(small[0] - small[1]).mean() < 8, f"panel {index} differs from the PNG's"


@pytest.mark.slow
@pytest.mark.data
def test_a_file_that_is_not_an_image_shows_the_apis_message(
    browser: Any, server_url: str, photos: tuple[Path, Path], tmp_path: Path, screenshot_dir: Path
) -> None:
    text_file = tmp_path / "notes.txt"
    text_file.write_text("this is not a photo\n")
    with httpx.Client(base_url=server_url, timeout=60) as api:
        answer = api.post(
            "/v1/verify", files={"image1": text_file.read_bytes(), "image2": photos[1].read_bytes()}
        )
    assert answer.status_code == 415
    _open_page(browser, server_url)
    _choose(browser, text_file, photos[1])
    _press_verify_and_wait(browser)
    assert _error_shown(browser) == answer.json()["error"]["message"]
    assert browser.execute_script("return document.getElementById('result').hidden")
    _check_layout_and_screenshot(browser, screenshot_dir, "error")


@pytest.mark.slow
@pytest.mark.data
def test_an_overloaded_answer_shows_the_apis_message_and_when_to_retry(
    browser: Any, server_url: str, photos: tuple[Path, Path]
) -> None:
    _open_page(browser, server_url)
    # The server answers 429 only under load; here the browser's fetch answers as the API does then.
    overloaded = {"error": {"code": "overloaded", "message": "too many requests are waiting"}}
    _answer_with(browser, "v1/verify", 429, overloaded, {"Retry-After": "1"})
    _choose(browser, *photos)
    _press_verify_and_wait(browser)
    assert _error_shown(browser) == "too many requests are waiting (retry in 1 s)"


@pytest.mark.slow
@pytest.mark.data
def test_the_operating_point_is_shown_with_the_rates_measured_at_it(
    browser: Any, server_url: str, photos: tuple[Path, Path]
) -> None:
    with httpx.Client(base_url=server_url, timeout=60) as api:
        info = api.get("/v1/model").json()
        files = {f"image{i + 1}": photo.read_bytes() for i, photo in enumerate(photos)}
        answer = api.post("/v1/verify", files=files).json()
    name = answer["operating_point"]
    # A card calibrated with held-out pairs lists each point's measured rates (the shipped card may not yet).
    measured = {"threshold": answer["threshold"], "far": 0.001, "tar": 0.62}
    info["operating_points"] = {
        **info.get("operating_points", {}),
        name: {**measured, "impostor_pairs": 8000},
    }
    _open_page(browser, server_url)
    _answer_with(browser, "v1/model", 200, info, {})
    browser.find_element("id", "api-key").send_keys(" ")  # a key edit makes the page read /v1/model again
    _choose(browser, *photos)
    _press_verify_and_wait(browser)
    result = _text(browser, "result")
    assert name in result
    assert "false accepts 0.10%, true accepts 62% on held-out people" in result


@pytest.mark.slow
def test_a_dropped_photo_is_chosen_and_shown(browser: Any, server_url: str) -> None:
    ok, encoded = cv2.imencode(".png", two_drawn_people()[0])
    assert ok
    _open_page(browser, server_url)
    browser.execute_script(
        """
        const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], 'dropped.png', {type: 'image/png'}));
        const zone = document.querySelector('label[for=image2]');
        zone.dispatchEvent(new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true}));
        """,
        base64.b64encode(encoded.tobytes()).decode(),
    )
    _wait_until(browser, "!byId('photo2').hidden")
    chosen = browser.execute_script("return document.getElementById('image2').files[0].name")
    assert chosen == "dropped.png"
    shown = browser.execute_script("const c = document.getElementById('photo2'); return [c.width, c.height]")
    assert shown == [320, 320]


@pytest.fixture(scope="module")
def keyed_server_url(cfp_root: Path) -> Iterator[str]:
    """A real server that needs the API key `API_KEY`."""
    with uvicorn_server(DRFACE_TORCH_THREADS="1", DRFACE_API_KEYS=API_KEY) as url:
        yield url


@pytest.mark.slow
@pytest.mark.data
def test_with_api_keys_the_page_asks_for_one_and_keeps_it_in_session_storage(
    browser: Any, keyed_server_url: str, photos: tuple[Path, Path]
) -> None:
    missing = httpx.get(keyed_server_url + "/v1/model").json()["error"]["message"]
    _open_page(browser, keyed_server_url)
    _choose(browser, *photos)
    _press_verify_and_wait(browser)
    assert _error_shown(browser) == missing
    assert browser.switch_to.active_element.get_attribute("id") == "api-key"

    browser.find_element("id", "api-key").send_keys(API_KEY)
    _press_verify_and_wait(browser)
    assert _error_shown(browser) == ""
    assert browser.execute_script("return document.querySelectorAll('#regions2 canvas.layer').length")
    assert browser.execute_script("return sessionStorage.getItem('drface.apiKey')") == API_KEY
    requested = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert not any(API_KEY in url for url in [browser.current_url, *requested])

    browser.refresh()  # same tab, same session: the key is still there
    assert browser.find_element("id", "api-key").get_attribute("value") == API_KEY
