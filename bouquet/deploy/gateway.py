"""Fleet gateway: the only door of a SuperLink that institutions are given.

Flower 1.41 serves the Fleet API (SuperNodes), the Control API (``flwr`` CLI: start runs,
register and unregister node keys) and the Runtime API on one HTTP port, and the Control API
of an open-source SuperLink needs no credential. So whoever can reach that port with the CA
certificate could register a key, unregister an institution, or read runs. ``deploy-local``
therefore binds the SuperLink to loopback (the operator's side) and puts this gateway on the
address institutions connect to: it forwards ``/v1/fleet/*`` and ``/health`` to the SuperLink
and answers 403 to everything else. With TLS it terminates TLS with the server certificate and
talks TLS to the SuperLink; SuperNode authentication is untouched (its signed headers pass
through and the SuperLink checks them).

    python -m bouquet.deploy.gateway --listen 0.0.0.0:9092 --upstream 127.0.0.1:9093 \\
        [--certfile server.pem --keyfile server.key --ca ca.crt]
"""

from __future__ import annotations

import argparse
import ssl

FLEET_PREFIX, HEALTH = "/v1/fleet/", "/health"
MAX_BODY = 1 << 30  # 1 GiB: more than any model Bouquet sends; a larger request is refused as it arrives
# hop-by-hop headers are not forwarded; content-length is set again by the HTTP library
DROPPED = frozenset({"host", "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                     "proxy-authorization", "proxy-authenticate", "content-length"})
# what a client says about itself for a proxy: the SuperLink trusts these from 127.0.0.1 (us), so never forwarded
FORWARDED = frozenset({"forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip"})


async def read_body(receive, limit: int) -> bytes | None:
    """The request body, or None once it passes ``limit`` bytes (counted as they arrive: a chunked
    body declares no length)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def allowed(method: str, path: str) -> bool:
    """Only what a SuperNode needs: Fleet API calls (POST) and the health probe (GET)."""
    return (method == "POST" and path.startswith(FLEET_PREFIX) and ".." not in path) or \
        (method == "GET" and path == HEALTH)


def make_app(upstream: str, verify: ssl.SSLContext | bool):
    """The ASGI app: forward allowed requests to ``upstream`` (``https://host:port``), refuse
    the rest with 403 before reading their body."""
    import httpx  # noqa: PLC0415 (flwr dependencies)
    from starlette.requests import Request  # noqa: PLC0415
    from starlette.responses import Response  # noqa: PLC0415

    client = httpx.AsyncClient(base_url=upstream, verify=verify, timeout=httpx.Timeout(300.0))

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await client.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return
        request = Request(scope, receive)
        if not allowed(request.method, request.url.path) or request.url.query:
            response = Response(b"this address serves only the Flower Fleet API\n", status_code=403)
        elif not request.headers.get("content-length", "0").isdigit() or \
                int(request.headers.get("content-length", "0")) > MAX_BODY or \
                (body := await read_body(receive, MAX_BODY)) is None:
            response = Response(b"request too large\n", status_code=413)
        else:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in DROPPED | FORWARDED}
            try:
                up = await client.request(request.method, request.url.path, content=body, headers=headers)
            except httpx.HTTPError as exc:
                response = Response(f"SuperLink unreachable: {type(exc).__name__}\n".encode(), status_code=502)
            else:
                kept = {k: v for k, v in up.headers.items() if k.lower() not in DROPPED | {"content-encoding"}}
                response = Response(up.content, status_code=up.status_code, headers=kept)
        await response(scope, receive, send)

    return app


def serve(listen: str, upstream: str, *, certfile: str | None = None, keyfile: str | None = None,
          ca: str | None = None) -> None:
    import uvicorn  # noqa: PLC0415 (a flwr dependency)

    host, _, port = listen.rpartition(":")
    tls = certfile is not None
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca) if tls else False
    app = make_app(f"{'https' if tls else 'http'}://{upstream}", verify)
    uvicorn.run(app, host=host, port=int(port), ssl_certfile=certfile, ssl_keyfile=keyfile, log_level="warning",
                lifespan="on", limit_concurrency=256)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bouquet.deploy.gateway", description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT institutions connect to")
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the SuperLink (loopback)")
    parser.add_argument("--certfile", help="TLS: the SuperLink's server certificate")
    parser.add_argument("--keyfile", help="TLS: its private key")
    parser.add_argument("--ca", help="TLS: the CA that signed the SuperLink's certificate")
    ns = parser.parse_args(argv)
    serve(ns.listen, ns.upstream, certfile=ns.certfile, keyfile=ns.keyfile, ca=ns.ca)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
