"""The PDP's operations HTTP server (aiohttp): /healthz, /readyz, /metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from pgwarden.pdp.server import Pdp

PDP_KEY: web.AppKey[Pdp] = web.AppKey("pdp")


async def healthz(request: web.Request) -> web.Response:
    """Alive: the process answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready: OPA reachable and a policy revision loaded (checked now, not cached)."""
    pdp = request.app[PDP_KEY]
    ready = await pdp.check_ready()
    body = {
        "ready": ready,
        "revision": pdp.feed.revision,
        "opa": pdp.config.opa.mode,
        "opa_pid": pdp.opa.opa_pid,
    }
    return web.json_response(body, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format 0.0.4."""
    pdp = request.app[PDP_KEY]
    return web.Response(
        text=pdp.metrics.text(), content_type="text/plain", charset="utf-8", headers={}
    )


def ops_app(pdp: Pdp) -> web.Application:
    app = web.Application()
    app[PDP_KEY] = pdp
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def start_ops_server(pdp: Pdp, listen: str) -> web.AppRunner:
    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(ops_app(pdp), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, int(port)).start()
    return runner
