"""The generated report in a real browser: headless Chromium from disk (file://), no network, no
browser download. Fails on any SEVERE console entry, on any image that did not decode, and on a
variant of the run missing from the page text."""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (Debian: apt-get install -y chromium chromium-driver)")


@pytest.fixture(scope="module")
def report(tmp_path_factory, evil_rows, write_fixture_run):
    from harness.render.report import build_report

    tmp = tmp_path_factory.mktemp("browser")
    rows = evil_rows()
    run = write_fixture_run(tmp / "runs" / "fixture-run", rows)
    out, index = build_report([run], reports_root=tmp / "reports")
    return out, index, sorted({r["variant"] for r in rows})


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1400,1000",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        drv = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    except WebDriverException as exc:
        pytest.fail(f"chromium {CHROMIUM} did not start under {CHROMEDRIVER}: {exc.msg}")
    yield drv
    drv.quit()


def _severe(drv) -> list[dict]:
    return [e for e in drv.get_log("browser") if e.get("level") == "SEVERE"]


def test_report_opens_from_disk_without_errors(report, driver):
    from selenium.webdriver.common.by import By

    out, _, variants = report
    driver.get(out.resolve().as_uri())
    assert driver.title.startswith("attnbench report")
    images = driver.find_elements(By.TAG_NAME, "img")
    assert len(images) >= 5
    broken = [img.get_attribute("alt") for img in images
              if not driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0;", img)]
    assert broken == [], f"images that did not decode: {broken}"
    text = driver.find_element(By.TAG_NAME, "body").text
    missing = [v for v in variants if v not in text]
    assert missing == [], f"variants not shown in the page text: {missing}"
    # escaped, so shown as text and never run as a script
    assert "<b>bold</b>" in text and driver.execute_script("return document.querySelectorAll('b').length") == 0
    # the inline sort script works: sorting the summary by variant descending puts xformers first
    header = driver.find_element(By.CSS_SELECTOR, "#summary ~ table.sortable thead th")
    header.click()
    header.click()
    first = driver.find_element(By.CSS_SELECTOR, "#summary ~ table.sortable tbody tr td").text
    assert first == "xformers"
    assert _severe(driver) == []


def test_reports_index_links_to_the_report(report, driver):
    from selenium.webdriver.common.by import By

    out, index, _ = report
    driver.get(index.resolve().as_uri())
    link = driver.find_element(By.LINK_TEXT, out.parent.name)
    link.click()
    assert Path(driver.current_url.removeprefix("file://")).resolve() == out.resolve()
    assert _severe(driver) == []
