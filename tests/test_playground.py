"""The playground page in a real browser: headless Chromium (Debian's chromium and chromium-driver,
which `make test` installs when missing) loads it, picks a model, sees its tasks, submits a prompt and
watches the text stream in; the text equals the API's answer for the same seed. A screenshot is kept.
Without a browser the test is skipped, and says why."""

import os
import shutil
import tempfile
from pathlib import Path

import httpx
import pytest
from serve_models import LiveServer, Slowed, make_folders
from text_models import single_thread  # noqa: F401  (a fixture)

from triform.serve import Limits, create_app, load_served

pytestmark = pytest.mark.usefixtures("single_thread")

# Flags that let Chromium run headless as root in a container, with nothing fetched from outside.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
]
SCREENSHOT = Path(os.environ.get("TRIFORM_SCREENSHOTS", tempfile.gettempdir())) / "playground.png"


def browser_or_skip():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip(
            "playground browser test: Debian's chromium and chromium-driver are not installed and could not be "
            "(`make test` installs them with apt-get when run as root)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}")
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folders = make_folders(tmp_path_factory.mktemp("served"))
    models = {name: load_served(name, folders[name]) for name in ("bert", "gpt", "translator")}
    # 30 ms a token, so that the page shows the text arriving however busy the machine is.
    with Slowed(models["gpt"].model, 0.03), LiveServer(create_app(models, Limits(max_tokens=64))) as live:
        yield live


def test_the_playground_streams_what_the_api_answers(server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser = browser_or_skip()
    try:
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda b: len(Select(b.find_element(By.ID, "model")).options) == 3)
        Select(browser.find_element(By.ID, "model")).select_by_value("bert")
        assert "fill-mask" in browser.find_element(By.ID, "about").text
        Select(browser.find_element(By.ID, "model")).select_by_value("gpt")
        tasks = [o.text for o in Select(browser.find_element(By.ID, "task")).options]
        assert tasks == ["completions", "embeddings"]
        assert "stack + clm + causal" in browser.find_element(By.ID, "about").text

        prompt = browser.find_element(By.ID, "prompt")
        prompt.clear()
        prompt.send_keys("the cat sat on")
        for field, value in (("max-tokens", "24"), ("temperature", "0.9"), ("seed", "11")):
            box = browser.find_element(By.ID, field)
            box.clear()
            box.send_keys(value)
        # Watch the output grow: the page appends each streamed piece as it arrives.
        browser.execute_script(
            "window.lengths = []; new MutationObserver(() => window.lengths.push("
            "document.getElementById('output').textContent.length)).observe("
            "document.getElementById('output'), {childList: true, characterData: true, subtree: true});"
        )
        browser.find_element(By.ID, "run").click()
        wait.until(lambda b: b.find_element(By.ID, "output").get_attribute("data-state") == "done")
        shown = browser.execute_script("return document.getElementById('output').textContent")
        wait.until(
            lambda b: b.execute_script(
                "const p = document.getElementById('pattern'); return p.complete && p.naturalWidth > 0"
            )
        )
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SCREENSHOT))
        print(f"playground screenshot: {SCREENSHOT}")
        growth = browser.execute_script("return window.lengths")
    finally:
        browser.quit()
    body = {"model": "gpt", "prompt": "the cat sat on", "max_tokens": 24, "temperature": 0.9, "seed": 11}
    expected = httpx.post(f"{server.url}/v1/completions", json=body, timeout=60).json()["choices"][0]["text"]
    assert shown == expected and len(shown) > 10
    assert len([n for n in growth if n > 0]) > 3  # it came in pieces, not at once
    assert SCREENSHOT.stat().st_size > 10_000
