"""The web page in a real browser: Debian's chromium, headless, its microphone fed from a WAV file.

Selenium drives chromium through Debian's chromedriver (no browser or driver is downloaded). The page
captures the fake microphone with its AudioWorklet, streams it to the real server, and committed
phonemes must appear. ``.ci/run`` installs chromium; outside CI the test is skipped where it is missing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import soundfile as sf

from phonestream.audio import load_audio
from phonestream.engine import Recognizer
from phonestream.server import App, ServerSettings
from phonestream.streaming import StreamConfig

from .conftest import SAMPLES
from .test_server import health, running_server, wait_idle

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _browser(tmp_path: Path, wav: Path):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver must be installed (.ci/run installs them)")
        pytest.skip("chromium / chromedriver not installed (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-audio-capture={wav}", "--autoplay-policy=no-user-gesture-required",
                 "--disable-background-networking", "--disable-component-update", "--no-first-run",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


@pytest.mark.parametrize("query", ["", "?resampler=worklet"], ids=["browser-resampler", "worklet-resampler"])
def test_page_streams_the_microphone_and_shows_phonemes(tmp_path, tiny_model, query):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wav = tmp_path / "speech.wav"
    sf.write(wav, load_audio(SAMPLES / "LJ001-0001.flac", 16000), 16000, subtype="PCM_16")
    app = App(Recognizer(tiny_model, StreamConfig(320, 640, 160)), ServerSettings())
    with running_server(app) as url:
        driver = _browser(tmp_path, wav)
        try:
            driver.get(url.replace("ws://", "http://").replace("/ws", "/") + query)
            assert driver.find_element(By.ID, "toggle").text == "Start"
            driver.find_element(By.ID, "toggle").click()
            wait = WebDriverWait(driver, 60, poll_frequency=0.2)
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#committed .phoneme")) >= 5
                       or d.find_element(By.ID, "status").text.startswith("error"))
            status = driver.find_element(By.ID, "status").text
            assert status.startswith("streaming"), status
            assert ("mic at 16000 Hz" in status) == (query == ""), status
            first = driver.find_elements(By.CSS_SELECTOR, "#committed .phoneme")[0]
            assert "confidence" in first.get_attribute("title") and "s" in first.find_element(By.TAG_NAME, "small").text
            assert driver.find_element(By.ID, "delay").text.endswith(" s")  # the current emission delay
            assert len(driver.find_elements(By.CSS_SELECTOR, "#rows tr")) >= 5  # times and confidence table
            assert health(url)["streams"] == 1
            driver.find_element(By.ID, "toggle").click()  # stop: the page asks for the summary
            wait.until(lambda d: d.find_element(By.ID, "summary").text.strip() != "")
            assert '"type": "summary"' in driver.find_element(By.ID, "summary").text
            wait.until(lambda d: d.find_element(By.ID, "status").text == "stopped")
        finally:
            driver.quit()
        assert wait_idle(url)["streams"] == 0
