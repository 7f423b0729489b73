"""The dashboard's server and controls without a session: security refusals over real
HTTP and WebSocket connections, malformed controls, the control step's knob rules,
the report's control table and the flags (issue 16)."""

from __future__ import annotations

import http.client
import json
import logging

import pytest

from st_agent.cli import main
from st_agent.contract import SafetyBounds
from st_agent.errors import UsageError
from st_agent.live.dashboard import ControlRefused, DashboardHub
from st_agent.live.dashboard_controls import ControlState, adjust_knobs
from st_agent.live.dashboard_server import COOKIE, CSRF_HEADER, DashboardServer
from st_agent.live.report import control_table
from st_agent.live.session import SessionConfig
from st_agent.types import Knobs


@pytest.fixture
def served():
    hub = DashboardHub(((0.1, 0.9), (0.0, 1.0), (0.0, 0.8)))
    hub.publish("config", channels=["Fz"], types=["eeg"], targets=["calm"], target="calm",
                ranges=[[0.1, 0.9], [0, 1], [0, 0.8]], read_only=False, accelerated=True)
    server = DashboardServer(hub)
    server.start()
    yield hub, server
    server.stop(grace_sec=0.0)


def _request(server, method, path, headers=None, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def _sign_in(server) -> str:
    status, headers, _ = _request(server, "GET", f"/?token={server.token}")
    assert status == 303 and headers["location"] == "/"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    return cookie.split(";")[0]


def _post(server, cookie, body, **extra):
    headers = {"Cookie": cookie, "Origin": f"http://127.0.0.1:{server.port}",
               CSRF_HEADER: server.csrf, "Content-Type": "application/json", **extra}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, _, out = _request(server, "POST", "/api/control", headers, data)
    return status, json.loads(out)


def test_the_url_is_loopback_with_a_token(served) -> None:
    _, server = served
    assert server.url == f"http://127.0.0.1:{server.port}/?token={server.token}"
    assert len(server.token) >= 24


def test_a_missing_or_wrong_token_is_refused(served) -> None:
    _, server = served
    for path in ("/", "/api/messages", "/dashboard.js", "/abcjs.js"):
        status, _, body = _request(server, "GET", path)
        assert status == 401 and "token" in json.loads(body)["error"]
    status, headers, _ = _request(server, "GET", "/?token=not-the-token")
    assert status == 401 and "set-cookie" not in {k.lower() for k in headers}
    status, _, _ = _request(server, "GET", "/", {"Cookie": f"{server.cookie_name}=forged"})
    assert status == 401


def test_two_dashboards_keep_their_own_cookies(served) -> None:
    """Cookies are shared by every port of a host: a second dashboard (a review beside a
    live session) sets a cookie of another name, and neither accepts the other's."""
    hub, server = served
    other = DashboardServer(hub)
    other.start()
    try:
        mine, theirs = _sign_in(server), _sign_in(other)
        assert mine.split("=")[0] == server.cookie_name != theirs.split("=")[0]
        assert server.cookie_name.startswith(COOKIE)
        assert _request(server, "GET", "/api/messages", {"Cookie": mine})[0] == 200
        assert _request(server, "GET", "/api/messages", {"Cookie": theirs})[0] == 401
        assert _request(other, "GET", "/api/messages", {"Cookie": mine})[0] == 401
        both = f"{mine}; {theirs}"  # what the browser sends once both are open
        assert _request(server, "GET", "/api/messages", {"Cookie": both})[0] == 200
        assert _request(other, "GET", "/api/messages", {"Cookie": both})[0] == 200
    finally:
        other.stop(grace_sec=0.0)


def test_the_token_buys_a_cookie_and_the_page(served) -> None:
    _hub, server = served
    cookie = _sign_in(server)
    status, headers, page = _request(server, "GET", "/", {"Cookie": cookie})
    assert status == 200 and "default-src 'none'" in headers["content-security-policy"]
    assert server.csrf in page.decode() and server.token not in page.decode()
    status, _, body = _request(server, "GET", "/api/messages?since=0", {"Cookie": cookie})
    assert status == 200 and json.loads(body)["messages"][0]["kind"] == "config"
    for asset in ("/dashboard.js", "/abcjs.js"):
        assert _request(server, "GET", asset, {"Cookie": cookie})[0] == 200


def test_a_foreign_host_or_origin_is_refused(served) -> None:
    hub, server = served
    cookie = _sign_in(server)
    status, _, body = _request(server, "GET", "/", {"Cookie": cookie,
                                                     "Host": f"evil.example:{server.port}"})
    assert status == 403 and "Host" in json.loads(body)["error"]
    status, _, _ = _request(server, "GET", "/", {"Cookie": cookie, "Host": "127.0.0.1:1"})
    assert status == 403  # the right name, another port
    status, _, body = _request(server, "GET", "/api/messages", {
        "Cookie": cookie, "Origin": "http://evil.example"})
    assert status == 403 and "Origin" in json.loads(body)["error"]
    status, _out = _post(server, cookie, {"action": "stop"}, Origin="http://evil.example")
    assert status == 403 and hub.drain() == []


def test_state_changes_need_the_csrf_token(served) -> None:
    hub, server = served
    cookie = _sign_in(server)
    for value in ("", "wrong"):
        status, out = _post(server, cookie, {"action": "stop"}, **{CSRF_HEADER: value})
        assert status == 403 and "CSRF" in out["error"]
    headers = {"Cookie": cookie, CSRF_HEADER: server.csrf, "Content-Type": "application/json"}
    status, _, body = _request(server, "POST", "/api/control", headers, b'{"action":"stop"}')
    assert status == 403 and "Origin" in json.loads(body)["error"]  # no Origin
    status, out = _post(server, cookie, b'{"action":"stop"}', **{"Content-Type": "text/plain"})
    assert status == 415
    assert hub.drain() == []


@pytest.mark.parametrize(("body", "needle"), [
    (b"{not json", "not JSON"),
    ([1, 2], "JSON object"),
    ({"action": "explode"}, "unknown action"),
    ({"action": "knobs", "value": {"tempo": 0.5, "volume": 1}}, "unknown knob"),
    ({"action": "knobs", "value": {"valence": 0.95}}, "[0.1, 0.9]"),
    ({"action": "knobs", "value": {"energy": "high"}}, "must be a number"),
    ({"action": "knobs", "value": {}}, "knobs takes"),
    ({"action": "target", "value": "euphoria"}, "unknown target"),
    ({"action": "marker", "value": ""}, "marker takes"),
    ({"action": "stop", "value": 3}, "takes no value"),
    ({"action": "stop", "extra": 1}, "unknown field"),
    ({"action": []}, "unknown action"),
    ({"action": "target", "value": [1]}, "unknown target"),
    (b'{"action": "knobs", "value": {"tempo": 1' + b"0" * 400 + b"}}", "must be a number"),
    (b"[" * 3000 + b"]" * 3000, "not JSON"),
])
def test_a_malformed_control_is_refused_and_changes_nothing(served, caplog, body,
                                                             needle) -> None:
    hub, server = served
    cookie = _sign_in(server)
    with caplog.at_level(logging.WARNING, logger="st_agent.live"):
        status, out = _post(server, cookie, body)
    assert status == 400 and needle in out["error"]
    assert hub.drain() == []
    assert any("refused" in r.getMessage() for r in caplog.records)


def test_odd_credentials_and_paths_are_refused_cleanly(served, caplog) -> None:
    """A non-ASCII token, cookie or CSRF header is a refusal, not a server error; a
    declared oversize body is refused before it is read; a path cannot forge log lines."""
    hub, server = served
    status, _, _ = _request(server, "GET", "/?token=%C3%A9")
    assert status == 401
    odd = f"{server.cookie_name}=\u00e9".encode().decode("unicode_escape")
    status, _, _ = _request(server, "GET", "/api/messages", {"Cookie": odd})
    assert status == 401
    cookie = _sign_in(server)
    status, out = _post(server, cookie, b'{"action":"stop"}', **{CSRF_HEADER: "\u00e9"})
    assert status == 403 and "CSRF" in out["error"]
    status, out = _post(server, cookie, b'{"action":"stop"}',
                        **{"Content-Length": str(10**9)})
    assert status == 413
    with caplog.at_level(logging.WARNING, logger="st_agent.live"):
        _request(server, "GET", "/x%0aforged%20line%1b[31m")
    logged = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert logged and all("\n" not in m and "\x1b" not in m for m in logged)
    assert hub.drain() == []


def test_answers_are_not_cached(served) -> None:
    _hub, server = served
    cookie = _sign_in(server)
    for path, headers in (("/api/messages", {"Cookie": cookie}), ("/api/messages", {})):
        _, got, _ = _request(server, "GET", path, headers)
        got = {k.lower(): v for k, v in got.items()}
        assert got["cache-control"] == "no-store" and got["x-content-type-options"] == "nosniff"


def test_a_valid_control_is_queued_for_the_loop(served) -> None:
    hub, server = served
    cookie = _sign_in(server)
    status, out = _post(server, cookie, {"action": "knobs", "value": {"tempo": 0.2}})
    assert status == 202 and out == {"queued": "knobs", "value": {"tempo": 0.2}}
    status, _ = _post(server, cookie, {"action": "marker", "value": " eyes closed "})
    assert status == 202
    got = hub.drain()
    assert [(a.action, a.value) for a in got] == [("knobs", {"tempo": 0.2}),
                                                 ("marker", "eyes closed")]
    hub.close("done")
    status, out = _post(server, cookie, {"action": "stop"})
    assert status == 409 and hub.drain() == []


def test_the_websocket_checks_origin_and_cookie(served) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    hub, server = served
    cookie = _sign_in(server)
    url = f"ws://127.0.0.1:{server.port}/ws"
    own = f"http://127.0.0.1:{server.port}"
    for headers in ({"Cookie": cookie}, {"Cookie": cookie, "Origin": "http://evil.example"},
                    {"Origin": own}):
        with pytest.raises(InvalidStatus):
            connect(url, additional_headers=headers, origin=None, open_timeout=5)
    hub.publish("estimate", t=1.0, valence=0.1)
    with connect(url, additional_headers={"Cookie": cookie, "Origin": own},
                 open_timeout=5) as ws:
        batch = json.loads(ws.recv(timeout=5))
    assert [m["kind"] for m in batch] == ["config", "estimate"]
    assert all("wall_ms" in m and "seq" in m for m in batch)


def test_a_review_refuses_every_control() -> None:
    hub = DashboardHub(read_only=True)
    with pytest.raises(ControlRefused) as e:
        hub.submit({"action": "stop"})
    assert e.value.status == 403 and hub.drain() == []


def test_a_non_loopback_bind_needs_the_flag(caplog) -> None:
    hub = DashboardHub()
    with pytest.raises(UsageError, match="--dashboard-host"):
        DashboardServer(hub, host="0.0.0.0")
    with caplog.at_level(logging.WARNING, logger="st_agent.live.dashboard_server"):
        server = DashboardServer(hub, host="0.0.0.0", allow_remote=True)
    server._sock.close()
    assert any("personal data" in r.getMessage() for r in caplog.records)


def test_the_dashboard_flags_are_checked(capsys) -> None:
    with pytest.raises(ValueError, match="--dashboard-port"):
        SessionConfig(board="virtual", dashboard_port=70000)
    with pytest.raises(ValueError, match="--dashboard-host"):
        SessionConfig(board="virtual", dashboard_host=" ")
    assert main(["session", "--board", "virtual", "--dashboard-port", "-3"]) == 2
    assert main(["dashboard", "/no/such/session"]) == 2


def test_a_port_in_use_is_a_usage_error() -> None:
    first = DashboardServer(DashboardHub())
    try:
        with pytest.raises(UsageError, match="--dashboard-port"):
            DashboardServer(DashboardHub(), port=first.port)
    finally:
        first._sock.close()


def test_override_moves_at_the_rate_limit_and_pause_holds() -> None:
    bounds = SafetyBounds(tempo=(0.2, 1.0), max_delta=0.1)
    ctrl = ControlState(override={"tempo": 0.0})  # below the bound: the bound wins
    now, words = adjust_knobs(ctrl, Knobs(0.5, 0.5, 0.5), Knobs(0.9, 0.9, 0.9), ["p"], bounds)
    assert now.as_tuple() == pytest.approx((0.5, 0.4, 0.5)) and "override" in words[0]
    for _ in range(5):
        now, _ = adjust_knobs(ctrl, now, now, [], bounds)
    assert now.tempo == pytest.approx(0.2) and now.valence == 0.5
    ctrl = ControlState(paused=True)
    held, words = adjust_knobs(ctrl, Knobs(0.5, 0.5, 0.5), Knobs(0.9, 0.9, 0.9), ["p"], bounds)
    assert held == Knobs(0.5, 0.5, 0.5) and "paused" in words[0]
    free = ControlState()
    assert adjust_knobs(free, Knobs(0.5, 0.5, 0.5), Knobs(0.6, 0.5, 0.5), ["p"], bounds) \
        == (Knobs(0.6, 0.5, 0.5), ["p"])


def test_the_report_lists_the_control_actions() -> None:
    events = [{"kind": "control", "onset_sec": 3.0, "payload": {
        "t_session": 12.5, "action": "knobs", "value": {"tempo": 0.2}, "source": "dashboard"}},
        {"kind": "control", "onset_sec": 4.0, "payload": {
            "t_session": 14.0, "action": "target", "value": "focus", "source": "dashboard",
            "previous": "calm", "transition": "planned"}},
        {"kind": "decision", "onset_sec": 5.0, "payload": {}}]
    table = control_table(events)
    assert table.count("<tr><td>") == 2
    assert "12.5" in table and "{&quot;tempo&quot;: 0.2}" in table and "previous calm" in table
    assert "None" in control_table([])
