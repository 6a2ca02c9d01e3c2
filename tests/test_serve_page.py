"""The page at GET / in a real headless browser (Debian's chromium + chromedriver, driven by selenium): add a
document, ask about it, consolidate, see the versions with their reports, roll back."""

from __future__ import annotations

import shutil

import pytest
from serve_helpers import WRITE_KEY, Server

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")


@pytest.fixture
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("no headless browser: apt-get install chromium chromium-driver (scripts/setup.sh --with-browser)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def test_page_adds_asks_consolidates_and_rolls_back(browser, scrambled_model_dir, tmp_path):
    server = Server(tmp_path / "data", scrambled_model_dir).start()
    try:
        wait = WebDriverWait(browser, 120)
        text = lambda element_id: browser.find_element(By.ID, element_id).text  # noqa: E731
        browser.get(server.url + "/")
        assert browser.title == "seal memory"
        browser.find_element(By.ID, "key").send_keys("wrong")
        browser.find_element(By.ID, "save-key").click()
        wait.until(lambda _: "401" in text("error"))

        key = browser.find_element(By.ID, "key")
        key.clear()
        key.send_keys(WRITE_KEY)
        browser.find_element(By.ID, "save-key").click()
        wait.until(lambda _: text("error") == "" and "base (active)" in text("versions"))

        browser.find_element(By.ID, "doc-title").send_keys("Orrin Canal")
        browser.find_element(By.ID, "doc-text").send_keys("The Orrin Canal opened in 1843 and joins the Tesk to Lune.")
        browser.find_element(By.ID, "add-doc").click()
        wait.until(lambda _: "pending" in text("add-result") and "Orrin Canal pending" in text("documents"))

        browser.find_element(By.ID, "question").send_keys("When did the Orrin Canal open?")
        browser.find_element(By.ID, "ask").click()
        wait.until(lambda _: "retrieved: Orrin Canal" in text("answer-sources"))
        assert "version base" in text("answer-sources")

        browser.find_element(By.ID, "consolidate").click()
        wait.until(lambda _: ": done (1/1)" in text("job"))
        wait.until(lambda _: "consolidated" in text("documents") and "v0001 (active)" in text("versions"))
        report = browser.find_element(By.CSS_SELECTOR, "tr[data-version='v0001']").text
        assert "Orrin Canal" in report and "quiz_before" in report and "probe_after.perplexity" in report

        browser.find_element(By.CSS_SELECTOR, "tr[data-version='base'] button.activate").click()
        wait.until(lambda _: "base (active)" in text("versions"))
        browser.find_element(By.ID, "use-retrieval").click()  # off: the weights alone
        browser.find_element(By.ID, "ask").click()
        wait.until(lambda _: "no retrieval" in text("answer-sources"))
        assert "version base" in text("answer-sources")
    finally:
        server.stop()
