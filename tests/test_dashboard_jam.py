"""The jam's dashboard over HTTP (issue 16): per-performer state and knobs stream, a
marker and "fade out and stop" act and are recorded for every performer, the
single-listener controls are refused."""

from __future__ import annotations

import http.client
import json
import threading
import time
from urllib.parse import urlparse

import pytest

from st_agent.biometrics.recording import read_session
from st_agent.live.dashboard_server import CSRF_HEADER
from st_agent.live.jam import JamConfig, run_jam
from st_agent.policies.controllers import make_jam_controller


class _Client:
    def __init__(self, url: str) -> None:
        u = urlparse(url)
        self.port = u.port
        status, headers, _ = self.get(f"/?{u.query}")
        assert status == 303
        self.cookie = headers["set-cookie"].split(";")[0]
        _, _, page = self.get("/", {"Cookie": self.cookie})
        self.csrf = page.decode().split('name="csrf" content="')[1].split('"')[0]

    def get(self, path: str, headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers=headers or {})
            r = conn.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            conn.close()

    def messages(self) -> list[dict]:
        _, _, body = self.get("/api/messages?since=0", {"Cookie": self.cookie})
        return json.loads(body)["messages"]

    def post(self, body: dict) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("POST", "/api/control", body=json.dumps(body), headers={
                "Cookie": self.cookie, "Origin": f"http://127.0.0.1:{self.port}",
                CSRF_HEADER: self.csrf, "Content-Type": "application/json"})
            r = conn.getresponse()
            return r.status, json.loads(r.read())
        finally:
            conn.close()


@pytest.mark.slow
def test_the_jam_dashboard_streams_performers_and_stops(tmp_path) -> None:
    cfg = JamConfig(boards="virtual,virtual", accelerated=True, minutes=3.0,
                    calibration_sec=5.0, record=tmp_path, name="jam", policy="pid",
                    dashboard=True)
    controller, name, history = make_jam_controller("pid", 2, 0)
    urls: list[str] = []
    out: dict = {}

    def run() -> None:
        try:
            out["result"] = run_jam(cfg, controller, name, None, history,
                                    on_dashboard=urls.append)
        except BaseException as e:  # handed to the test's thread
            out["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    end = time.monotonic() + 120
    while not urls and thread.is_alive() and time.monotonic() < end:
        time.sleep(0.05)
    assert urls, f"the jam announced no dashboard: {out.get('error')!r}"
    client = _Client(urls[0])
    end = time.monotonic() + 60
    msgs: list[dict] = []
    while time.monotonic() < end:
        msgs = client.messages()
        if any(m["kind"] == "phrase" for m in msgs):
            break
        time.sleep(0.2)
    performers = {m["performer"] for m in msgs if m["kind"] == "performer"}
    assert performers == {0, 1}
    config = next(m for m in msgs if m["kind"] == "config")
    assert config["performers"] == 2 and config["actions"] == ["stop", "marker"]
    phrase = next(m for m in msgs if m["kind"] == "phrase")
    assert "V:" in phrase["abc"] or "K:" in phrase["abc"]
    status, body = client.post({"action": "knobs", "value": {"tempo": 0.2}})
    assert status == 400 and "does not take" in body["error"]
    assert client.post({"action": "marker", "value": "applause"})[0] == 202
    assert client.post({"action": "stop"})[0] == 202
    thread.join(timeout=120)
    assert "error" not in out, out.get("error")
    for folder in out["result"].performer_folders:
        controls = [(e["payload"]["action"], e["payload"]["value"])
                    for e in read_session(folder).events if e["kind"] == "control"]
        assert controls == [("marker", "applause"), ("stop", None)]
        assert "applause" in (folder / "report.html").read_text(encoding="utf-8")
