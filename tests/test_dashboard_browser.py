"""The live dashboard in a real browser (headless Chromium through Selenium, issue 16).

An accelerated virtual-listener session runs with ``dashboard=True`` in a thread; the
browser opens the URL the session announces, sees the plots update, renders the
current phrase's score, clicks "Override knobs" and "Fade out and stop", and the
recording (and report.html) shows both control actions. The page fetches nothing but
its own server. Then ``st-agent dashboard FOLDER``'s review of that session shows the
same controls, read-only.
"""

from __future__ import annotations

import json
import shutil
import threading
import time

import pytest

from st_agent.biometrics.recording import read_session
from st_agent.live.dashboard_cli import DashboardConfig, serve_review
from st_agent.live.session import SessionConfig, run_session
from st_agent.policies.controllers import make_controller


def _chromium():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.fail("headless Chromium and chromedriver are needed to test the dashboard "
                    "(Debian packages chromium and chromium-driver): run scripts/setup.sh")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


def _wait(driver, cond, what: str, timeout: float = 40.0) -> dict[str, str]:
    end = time.monotonic() + timeout
    data: dict[str, str] = {}
    while time.monotonic() < end:
        data = driver.execute_script("return Object.assign({}, document.body.dataset)")
        if cond(data):
            return data
        time.sleep(0.1)
    raise AssertionError(f"the page did not show {what} in {timeout} s: {data}")


def _review(driver, folder) -> None:
    """``st-agent dashboard FOLDER``: the finished session, read-only."""
    server = serve_review(DashboardConfig(folder))
    try:
        driver.get(server.url)
        data = _wait(driver, lambda d: int(d["controls"]) == 2 and int(d["phrases"]) >= 1
                     and int(d["estimates"]) > 3 and d["ended"] != "", "the review")
        assert int(data["score"]) >= 1
        assert "ro" in driver.find_element("tag name", "body").get_attribute("class")
        assert not driver.find_element("id", "stop").is_displayed()
        status = driver.execute_async_script(
            "const cb = arguments[0]; fetch('/api/control', {method: 'POST', headers: "
            "{'Content-Type': 'application/json', 'X-CSRF-Token': document.querySelector("
            "'meta[name=csrf]').content}, body: JSON.stringify({action: 'stop'})})"
            ".then(r => cb(r.status))")
        assert status == 403
    finally:
        server.stop(grace_sec=0.0)


@pytest.mark.slow
def test_the_dashboard_shows_the_session_and_its_controls_act(tmp_path) -> None:
    cfg = SessionConfig(board="virtual", accelerated=True, minutes=3.0, calibration_sec=5.0,
                        record=tmp_path, name="dash", policy="pid", dashboard=True)
    controller, name = make_controller("pid", cfg.bounds(), cfg.target, None, 0)
    urls: list[str] = []
    out: dict[str, object] = {}

    def run() -> None:
        try:
            out["result"] = run_session(cfg, controller, name, on_dashboard=urls.append)
        except BaseException as e:  # handed to the test's thread
            out["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    end = time.monotonic() + 120
    while not urls and thread.is_alive() and time.monotonic() < end:
        time.sleep(0.05)
    assert urls, f"the session announced no dashboard: {out.get('error')!r}"
    url = urls[0]
    assert url.startswith("http://127.0.0.1:") and "?token=" in url
    origin = url.split("/?")[0]
    driver = _chromium()
    try:
        driver.get(url)
        assert driver.current_url == origin + "/"  # the token left the address bar
        data = _wait(driver, lambda d: d["ws"] == "open" and int(d["estimates"]) > 3
                     and int(d["signals"]) > 0 and int(d["frames"]) > 0, "live data")
        _wait(driver, lambda d: int(d["estimates"]) > int(data["estimates"]) + 3
              and int(d["frames"]) > int(data["frames"]), "the plots updating")
        _wait(driver, lambda d: int(d["phrases"]) >= 1 and int(d["score"]) >= 1,
              "a phrase and its score")
        # measured in the page in one call: the score is redrawn at each new phrase, which
        # can replace the element between a lookup and a second request for its size
        score_px = driver.execute_script(
            "const s = document.querySelector('#score svg');"
            "return s ? s.getBoundingClientRect().height : 0;")
        assert score_px > 20
        driver.execute_script("const e = document.getElementById('k-tempo');"
                              "e.value = 0.2; e.dispatchEvent(new Event('input'));")
        driver.find_element("id", "override").click()
        _wait(driver, lambda d: int(d["controls"]) >= 1, "the override applied")
        assert "sent: knobs" in driver.find_element("id", "ctl-msg").text
        driver.find_element("id", "stop").click()
        _wait(driver, lambda d: d["ended"] != "", "the session's end")
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        urls_seen = [json.loads(e["message"])["message"]["params"]["request"]["url"]
                     for e in driver.get_log("performance")
                     if json.loads(e["message"])["message"]["method"]
                     == "Network.requestWillBeSent"]
        assert urls_seen and all(u.startswith(origin) for u in urls_seen), urls_seen
        thread.join(timeout=120)
        assert "error" not in out, out.get("error")
        result = out["result"]
        _review(driver, result.folder)
    finally:
        driver.quit()
    assert result.summary["stop_reason"] == "stopped from the dashboard (fade out)"
    controls = [e["payload"] for e in read_session(result.folder).events
                if e["kind"] == "control"]
    assert [c["action"] for c in controls] == ["knobs", "stop"]
    assert controls[0]["value"]["tempo"] == pytest.approx(0.2)
    assert all(c["source"] == "dashboard" for c in controls)
    report = (result.folder / "report.html").read_text(encoding="utf-8")
    assert "Control actions" in report and "stop" in report.split("Control actions")[1]
