"""The Fleet gateway in-process (as uvicorn calls it), its upstream SuperLink replaced by a
recording httpx transport: what it forwards, and what it refuses before forwarding."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from bouquet.deploy import gateway


@pytest.fixture
def forwarded(monkeypatch):
    seen: list[httpx.Request] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"ok")

    real = httpx.AsyncClient
    monkeypatch.setattr(httpx, "AsyncClient", lambda **kw: real(transport=httpx.MockTransport(upstream), **kw))
    monkeypatch.setattr(gateway, "MAX_BODY", 1 << 16)
    return seen


def _call(app, path: str, headers: dict[str, str], chunks: list[bytes], method: str = "POST") -> int:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "client": ("192.0.2.7", 1),
             "server": ("127.0.0.1", 9092), "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    body = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent = []

    async def receive():
        return body.pop(0) if body else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return next(m["status"] for m in sent if m["type"] == "http.response.start")


def test_a_body_over_the_limit_is_refused_whether_or_not_it_declares_its_length(forwarded):
    app = gateway.make_app("http://127.0.0.1:9", False)
    big = [b"x" * 4096] * 32  # 128 KiB against a 64 KiB limit
    assert _call(app, "/v1/fleet/push-messages", {"content-length": str(128 * 1024)}, big) == 413
    assert _call(app, "/v1/fleet/push-messages", {"transfer-encoding": "chunked"}, big) == 413  # no length given
    assert _call(app, "/v1/fleet/push-messages", {"content-length": "-1"}, [b"{}"]) == 413
    assert forwarded == []
    assert _call(app, "/v1/fleet/push-messages", {"transfer-encoding": "chunked"}, [b"{", b"}"]) == 200
    assert [r.content for r in forwarded] == [b"{}"]


def test_what_a_client_says_about_its_own_address_is_not_forwarded(forwarded):
    app = gateway.make_app("http://127.0.0.1:9", False)
    headers = {"x-forwarded-for": "6.6.6.6", "x-forwarded-proto": "https", "forwarded": "for=6.6.6.6",
               "x-real-ip": "6.6.6.6", "flwr-public-key": "kept"}
    assert _call(app, "/v1/fleet/pull-messages", headers, [b"{}"]) == 200
    sent = {k.lower() for k in forwarded[0].headers}
    assert not sent & gateway.FORWARDED and "flwr-public-key" in sent


@pytest.mark.parametrize("method, path", [("POST", "/v1/control/list-runs"), ("POST", "/v1/fleet/../control/x"),
                                          ("GET", "/v1/fleet/pull-messages"), ("POST", "/v1/runtime/pull-messages")])
def test_only_the_fleet_api_passes(forwarded, method, path):
    assert _call(gateway.make_app("http://127.0.0.1:9", False), path, {}, [b"{}"], method) == 403
    assert forwarded == []
