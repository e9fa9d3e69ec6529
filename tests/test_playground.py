"""The playground page at /: served from the package with its headers (in-process), and used in a
real headless Chromium against a real `python -m service` (Selenium with the system's
chromedriver): the tutorial's network trained from the page, a point probed on its boundary, the
hidden-size comparison, the URL hash reproducing the experiment, and a service that asks for
API keys. Any error in the browser's console fails a browser test.

Screenshots go to a temporary folder (printed); with SCRATCHNET_WRITE_DOCS_IMAGES=1 the browser
test also writes README's picture of the page, docs/playground.png.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image

from engine.plotting import CLASS_COLOURS, PLOT_AREA_KEY
from tests.api_support import REPO, serve

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver"
WRITE_DOCS_IMAGES = os.environ.get("SCRATCHNET_WRITE_DOCS_IMAGES") == "1"
DOCS = REPO / "docs"
PAGE_SECONDS = 30.0
TRAIN_SECONDS = 120.0
API_KEY = "playground-test-key-0123456789"

# the tutorial's configuration (README, "A first session")
TUTORIAL_DATA = {"kind": "moons", "n_samples": "200", "noise": "0.2", "test_fraction": "0.2"}
TUTORIAL_NETWORK = {
    "activation": "tanh",
    "optimizer": "sgd",
    "learning_rate": "2.0",
    "l2": "0.01",
    "epochs": "20000",
}
# the comparison trains seven sizes: fewer epochs keep it quick, and its assertions are about
# the page showing the sweep, not about how well each size learns
COMPARE_EPOCHS = "2000"
# how Chromium logs the refused job (learning rate 0) the test sends on purpose
REFUSED_JOB = "/v1/jobs - Failed to load resource: the server responded with a status of 422"


# --- in process: the page and its assets -------------------------------------------------------


@pytest.mark.anyio
async def test_the_page_is_served_with_a_strict_policy(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "'unsafe-inline'" not in policy and "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-cache"
    assets = re.findall(r'(?:src|href)="(/[^"]+)"', page.text)
    assert "/playground/playground.js" in assets and "/playground/playground.css" in assets
    types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    for url in assets:
        if not url.startswith("/playground/"):
            continue
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["content-type"].split(";")[0] == types[Path(url).suffix], url
        assert asset.headers["content-security-policy"] == policy
        again = await client.get(url, headers={"If-None-Match": asset.headers["etag"]})
        assert (again.status_code, again.content) == (304, b""), url
    assert "<script>" not in page.text and " style=" not in page.text  # nothing inline
    for other in ("/docs", "/redoc"):
        assert (await client.get(other)).status_code == 200


@pytest.mark.anyio
async def test_the_page_has_only_its_own_files(client: httpx.AsyncClient) -> None:
    for name in ("index.html", "nothing.js", "..%2Fmain.py", "__init__.py"):
        response = await client.get(f"/playground/{name}")
        assert response.status_code == 404, name
        assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.anyio
async def test_the_palette_is_the_pictures(client: httpx.AsyncClient) -> None:
    css = (await client.get("/playground/palette.css")).text
    found = dict(re.findall(r"--class-(\d+): (#[0-9A-Fa-f]{6});", css))
    assert [found[str(i)] for i in range(len(CLASS_COLOURS))] == list(CLASS_COLOURS)


# --- in a browser --------------------------------------------------------------------------------

browser_only = pytest.mark.skipif(
    CHROMIUM is None or not Path(CHROMEDRIVER).exists(),
    reason="needs Chromium and chromedriver (apt-get install chromium chromium-driver; "
    ".ci/run installs them)",
)


class Page:
    """The playground in a headless Chromium: its controls by id, waits, and the console."""

    def __init__(self, driver: Any, url: str, shots: Path) -> None:
        self.driver = driver
        self.url = url
        self.shots = shots

    def element(self, element_id: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.ID, element_id)

    def wait(self, what: str, check: Callable[[], Any], seconds: float = PAGE_SECONDS) -> Any:
        deadline = time.monotonic() + seconds
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                self.shot(f"timeout-{re.sub(r'[^a-z]+', '-', what)}")
                raise AssertionError(
                    f"{what}: not within {seconds} s; the page says "
                    f"{self.element('status').text!r}; console: {self.console()}"
                )
            time.sleep(0.1)

    def body(self, name: str) -> str | None:
        value: str | None = self.driver.execute_script(f"return document.body.dataset.{name}")
        return value

    def open(self, address: str = "") -> None:
        self.driver.get(address or self.url + "/")
        self.wait("the page starts", lambda: self.body("ready") == "true")

    def set(self, element_id: str, value: str) -> None:
        """Type into a field or pick an option, as a person does (events and all)."""
        from selenium.webdriver.common.keys import Keys
        from selenium.webdriver.support.ui import Select

        control = self.element(element_id)
        if control.tag_name == "select":
            Select(control).select_by_value(value)
        else:
            control.send_keys(Keys.CONTROL, "a")
            control.send_keys(Keys.BACKSPACE)
            control.send_keys(value)

    def value(self, element_id: str) -> str:
        text: str = self.element(element_id).get_attribute("value")
        return text

    def number(self, element_id: str) -> float | None:
        raw = self.element(element_id).get_attribute("data-value")
        return None if raw is None else float(raw)

    def console(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self.driver.get_log("browser")
        return entries

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path


def console_errors(entries: list[dict[str, Any]], expected: tuple[str, ...] = ()) -> list[str]:
    """The console's errors (SEVERE), but those naming one of the `expected` URLs (a request a
    test makes fail on purpose is logged by the browser as a failed load)."""
    return [
        entry["message"]
        for entry in entries
        if entry["level"] == "SEVERE" and not any(url in entry["message"] for url in expected)
    ]


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("playground-screenshots", numbered=True)
    print(f"playground screenshots: {folder}")
    return folder


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,800",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def predict(http: httpx.Client, model_id: str, point: list[float]) -> list[float]:
    response = http.post(f"/v1/models/{model_id}/predict", json={"points": [point]})
    assert response.status_code == 200, response.text
    probabilities: list[float] = response.json()["probabilities"][0]
    return probabilities


def set_up_the_tutorial(page: Page, epochs: str) -> None:
    for name, value in TUTORIAL_DATA.items():
        page.set(name, value)
    for name, value in {**TUTORIAL_NETWORK, "epochs": epochs}.items():
        page.set(name, value)
    while len(page.driver.find_elements("css selector", "#layers li")) > 1:
        page.element("remove-layer").click()
    if not page.driver.find_elements("css selector", "#layers li"):
        page.element("add-layer").click()
    page.set("layer-0", "3")
    page.element("layer-0").send_keys("\t")  # the change event


def train(page: Page) -> str:
    """Press Train and wait for the final boundary; returns the model's id."""
    page.wait("the dataset is ready", lambda: page.body("dataset"))
    page.element("train").click()
    model_id: str = page.wait("training ends", lambda: page.body("trained"), TRAIN_SECONDS)
    return model_id


def probe_and_check(page: Page, http: httpx.Client, model_id: str) -> None:
    """Click a point of the final boundary: the page names the data coordinates the picture's
    axes give that pixel and shows the model's probabilities there."""
    from selenium.webdriver.common.action_chains import ActionChains

    boundary = page.element("boundary")
    picture = http.get(f"/v1/models/{model_id}/decision-boundary.png")
    area = json.loads(Image.open(io.BytesIO(picture.content)).info[PLOT_AREA_KEY])
    natural = page.driver.execute_script(
        "const i = arguments[0]; return [i.naturalWidth, i.naturalHeight, i.clientWidth, "
        "i.clientHeight]",
        boundary,
    )
    width, height, shown_width, shown_height = natural
    # a point a third of the way in from the plot's left and a quarter down from its top
    target = (area["left"] + area["width"] / 3, area["top"] + area["height"] / 4)
    offset = (target[0] * shown_width / width, target[1] * shown_height / height)
    # Selenium offsets are from the element's centre; the image has a 1 px border
    ActionChains(page.driver).move_to_element_with_offset(
        boundary,
        round(offset[0] + 1 - (shown_width + 2) / 2),
        round(offset[1] + 1 - (shown_height + 2) / 2),
    ).click().perform()
    probe = page.wait(
        "the probabilities", lambda: page.driver.find_elements("css selector", ".probe")
    )
    x, y = float(probe[0].get_attribute("data-x")), float(probe[0].get_attribute("data-y"))
    expected_x = area["x"][0] + (area["x"][1] - area["x"][0]) / 3
    expected_y = area["y"][1] - (area["y"][1] - area["y"][0]) / 4
    one_pixel = (area["x"][1] - area["x"][0]) / area["width"] * width / shown_width
    assert x == pytest.approx(expected_x, abs=1.5 * one_pixel)
    assert y == pytest.approx(expected_y, abs=1.5 * one_pixel)
    shown = [
        float(row.get_attribute("data-probability"))
        for row in page.driver.find_elements("css selector", "#probabilities .probability")
    ]
    assert shown == pytest.approx(predict(http, model_id, [x, y]), abs=1e-12)
    assert sum(shown) == pytest.approx(1.0)


def write_docs_image(page: Page) -> None:
    """README's picture of the page: all of it down to its training results, 1280 px wide."""
    DOCS.mkdir(exist_ok=True)
    height = page.driver.execute_script(
        "return document.getElementById('training-heading').closest('section')"
        ".getBoundingClientRect().bottom + window.scrollY + 16"
    )
    page.driver.set_window_size(1280, int(height) + 140)  # the window's frame, headless too
    page.driver.execute_script("window.scrollTo(0, 0)")
    time.sleep(0.3)  # the chart redraws at the new width
    shutil.copy(page.shot("readme"), DOCS / "playground.png")
    page.driver.set_window_size(1280, 800)


@browser_only
@pytest.mark.e2e
@pytest.mark.slow
def test_the_tutorial_in_the_browser(tmp_path: Path, browser: Any, shots: Path) -> None:
    with (
        serve(tmp_path) as server,
        httpx.Client(base_url=server.url, timeout=30.0) as http,
    ):
        page = Page(browser, server.url, shots)
        page.open()
        set_up_the_tutorial(page, TUTORIAL_NETWORK["epochs"])

        # an error from the API is shown next to the control that caused it
        page.set("learning_rate", "0")
        page.element("train").click()
        page.wait("the error", lambda: page.element("learning_rate-error").is_displayed())
        assert "greater than 0" in page.element("learning_rate-error").text
        assert page.element("learning_rate").get_attribute("aria-invalid") == "true"
        page.set("learning_rate", TUTORIAL_NETWORK["learning_rate"])

        model_id = train(page)
        job = http.get(f"/v1/models/{model_id}").json()
        accuracy = page.number("test-accuracy")
        assert accuracy is not None and accuracy >= 0.9, page.element("status").text
        trained = http.get(f"/v1/jobs/{job['job_id']}").json()
        assert accuracy == trained["metrics"]["test_accuracy"]
        assert trained["hyperparameters"]["hidden_layers"] == [3]
        assert trained["hyperparameters"]["learning_rate"] == 2.0
        assert trained["hyperparameters"]["l2"] == 0.01
        assert page.element("boundary").get_attribute("data-model") == model_id
        assert page.element("baseline-boundary").is_displayed()
        assert page.element("export").is_displayed()
        # while it trained the boundary followed the snapshots; after, the hidden units and
        # the evolution are shown
        assert int(page.body("liveFrames") or 0) >= 1
        assert trained["snapshot_epoch"] == trained["epoch"]
        for picture in ("neurons", "evolution"):
            assert page.element(picture).is_displayed(), picture
            assert page.driver.execute_script(
                "return arguments[0].naturalWidth", page.element(picture)
            ), picture
        page.shot("trained")

        probe_and_check(page, http, model_id)
        page.shot("probed")
        if WRITE_DOCS_IMAGES:
            write_docs_image(page)

        # the comparison: the tutorial's hidden sizes, the best marked
        page.set("epochs", COMPARE_EPOCHS)
        assert page.value("compare-parameter") == "hidden_layers"
        assert page.value("compare-values") == "1,2,3,4,5,20,50"
        page.element("compare").click()
        sweep_id = page.wait("the comparison ends", lambda: page.body("compared"), TRAIN_SECONDS)
        sweep = http.get(f"/v1/sweeps/{sweep_id}").json()
        assert sweep["grid"] == {"hidden_layers": [[1], [2], [3], [4], [5], [20], [50]]}
        rows = page.driver.find_elements("css selector", "#compare-table tbody tr")
        values = [row.find_element("css selector", "th").text for row in rows]
        assert values == ["[1]", "[2]", "[3]", "[4]", "[5]", "[20]", "[50]"]
        best = [i for i, row in enumerate(rows) if "best" in (row.get_attribute("class") or "")]
        assert best == [sweep["best_index"]]
        assert page.element("grid").is_displayed()
        page.shot("compared")

        # the URL reproduces the experiment: a fresh page from the link has every setting back
        link = page.driver.current_url
        assert urlsplit(link).fragment
        page.driver.get("about:blank")
        page.open(link)
        for name, value in {**TUTORIAL_DATA, **TUTORIAL_NETWORK, "epochs": COMPARE_EPOCHS}.items():
            assert page.value(name) == value, name
        assert page.value("layer-0") == "3"
        assert len(page.driver.find_elements("css selector", "#layers li")) == 1
        datasets = http.get("/v1/datasets", params={"limit": 100}).json()["items"]
        newest = datasets[-1]  # the reloaded page made it from the link's settings
        made = (newest["kind"], newest["n_samples"], newest["parameters"]["noise"])
        assert made == ("moons", 200, 0.2)

        # a phone's width: one column, nothing wider than the screen
        page.driver.set_window_size(390, 844)
        overflow = page.driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0
        page.shot("phone")
        # the one failed request: the job with learning rate 0
        errors = console_errors(page.console(), expected=(REFUSED_JOB,))
        assert errors == [], errors


def write_csv(path: Path) -> None:
    """Two gaussian clouds, class 0 around (-1, 0) and class 1 around (1, 0)."""
    rng = np.random.default_rng(0)
    rows = ["x1,x2,label"]
    for label, centre in ((0, -1.0), (1, 1.0)):
        for x1, x2 in rng.normal((centre, 0.0), 0.5, size=(40, 2)):
            rows.append(f"{x1:.6f},{x2:.6f},{label}")
    path.write_text("\n".join(rows) + "\n")


@browser_only
@pytest.mark.e2e
def test_an_uploaded_csv_keys_cancel_and_the_keyboard(
    tmp_path: Path, browser: Any, shots: Path
) -> None:
    with serve(tmp_path, api_keys=f"student:{API_KEY}") as server:
        page = Page(browser, server.url, shots)
        page.driver.get(server.url + "/")
        page.wait("the page asks for a key", lambda: page.element("api-key-error").is_displayed())
        assert "needs an API key" in page.element("api-key-error").text
        page.set("api-key", API_KEY)
        page.wait("the page starts", lambda: page.body("ready") == "true")
        stored = page.driver.execute_script("return sessionStorage.getItem('scratchnet-api-key')")
        assert stored == API_KEY
        assert page.driver.execute_script("return localStorage.length") == 0
        headers = {"Authorization": f"Bearer {API_KEY}"}
        http = httpx.Client(base_url=server.url, headers=headers, timeout=30.0)

        # a CSV file of the user's own points
        csv = tmp_path / "clouds.csv"
        write_csv(csv)
        page.set("kind", "csv")
        assert not page.element("n_samples").is_displayed()
        page.element("csv").send_keys(str(csv))
        dataset_id = page.wait("the upload", lambda: page.body("dataset"))
        dataset = http.get(f"/v1/datasets/{dataset_id}").json()
        assert (dataset["name"], dataset["n_samples"], dataset["kind"]) == (
            "clouds.csv",
            80,
            "custom",
        )
        assert page.element("dataset-image").is_displayed()
        assert f"dataset={dataset_id}" in urlsplit(page.driver.current_url).fragment

        page.set("epochs", "2000")
        model_id = train(page)
        assert http.get(f"/v1/models/{model_id}").json()["dataset_id"] == dataset_id
        probe_and_check(page, http, model_id)

        # the keyboard: the arrow keys move the probe by 2% of the plot, Enter probes again
        from selenium.webdriver.common.keys import Keys

        probed = page.driver.find_element("css selector", ".probe")
        x = float(probed.get_attribute("data-x"))
        page.element("boundary").send_keys(Keys.ARROW_RIGHT)
        page.wait(
            "the probe moves",
            lambda: (
                float(page.driver.find_element("css selector", ".probe").get_attribute("data-x"))
                != x
            ),
        )
        moved = page.driver.find_element("css selector", ".probe")
        area = json.loads(
            Image.open(
                io.BytesIO(http.get(f"/v1/models/{model_id}/decision-boundary.png").content)
            ).info[PLOT_AREA_KEY]
        )
        step = 0.02 * (area["x"][1] - area["x"][0])
        assert float(moved.get_attribute("data-x")) == pytest.approx(x + step)
        page.shot("with-key")

        # Cancel stops a long job
        page.set("epochs", "1000000")
        page.element("train").click()
        page.wait(
            "training starts",
            lambda: (
                page.element("epoch-counter").text.endswith("/ 1000000")
                and (page.number("epoch-counter") or 0) > 0
            ),
        )
        page.element("cancel").click()
        page.wait("the cancel", lambda: "Cancelled" in page.element("status").text)
        jobs = http.get("/v1/jobs", params={"status": "cancelled"}).json()
        assert jobs["total"] == 1 and jobs["items"][0]["epochs"] == 1_000_000
        assert not page.element("cancel").is_enabled() and page.element("train").is_enabled()
        http.close()
        assert console_errors(page.console()) == []
