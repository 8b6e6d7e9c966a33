"""The server on Ray Serve: the same app (:class:`phonestream.server.App`) in several replicas, on one
machine or a cluster.

Each replica loads its own model and runs its own :class:`~phonestream.scheduler.BatchScheduler`,
exactly as ``phonestream serve`` does in one process. Ray Serve's proxy hands each HTTP request and each
WebSocket connection to one replica and keeps a WebSocket on it until it closes, so a live stream's
state never moves. ``/health`` answers for the whole deployment: its counters (streams, batches,
windows, model busy time...) are summed over the replicas, which report them every half second to a
small named actor, so that ``phonestream loadtest`` measures the deployment as it measures one server.

Start it with ``phonestream serve-ray --replicas 2`` (:func:`run`), or build the application with
:func:`deployment` for ``serve.run``; ``serve run phonestream.ray_serve:app`` serves the default model.
Ray (``pip install 'phonestream[ray]'``) is imported by this module only.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from .batch import RecognizerSpec, connect_ray
from .server import App, ServerError, ServerSettings, check_bind

TALLY = "phonestream-health"  # the named actor holding each replica's latest counters
REPORT_S = 0.5
# /health counters that add up over replicas (largest_batch takes the largest, uptime the longest)
SUMMED = ("streams", "scheduler_sessions", "batches", "windows", "model_busy_s", "rejected_busy", "rss_mb")


@ray.remote(num_cpus=0)
class HealthTally:
    """The latest ``/health`` of every replica, by replica id; one not refreshed for 5 s has stopped."""

    def __init__(self) -> None:
        self.latest: dict[str, tuple[float, dict[str, Any]]] = {}

    def report(self, replica: str, health: dict[str, Any]) -> None:
        self.latest[replica] = (time.monotonic(), health)

    def all(self) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        self.latest = {k: v for k, v in self.latest.items() if now - v[0] < 5.0}
        return {k: h for k, (_, h) in self.latest.items()}


def combined_health(replicas: list[dict[str, Any]]) -> dict[str, Any]:
    """One ``/health`` answer for the deployment from its replicas' answers."""
    out = dict(replicas[0])
    for key in SUMMED:
        out[key] = round(sum(r.get(key) or 0 for r in replicas), 3)
    out["largest_batch"] = max(r.get("largest_batch") or 0 for r in replicas)
    out["uptime_s"] = max(r.get("uptime_s") or 0 for r in replicas)
    out["status"] = "ok" if all(r.get("status") == "ok" for r in replicas) else "worker stopped"
    out["replicas"] = len(replicas)
    return out


@serve.deployment
@serve.ingress()
class PhonestreamReplica:
    """One replica: a model, its scheduler and the server's app (built when Ray Serve starts it)."""

    def __init__(self, spec: RecognizerSpec, settings: ServerSettings) -> None:
        self.server = App(spec.build(), settings)  # not self.app: the ingress wrapper has that name
        self.id = uuid.uuid4().hex[:12]
        self.tally = HealthTally.options(name=TALLY, get_if_exists=True, lifetime="detached").remote()

    def __serve_build_asgi_app__(self):
        async def asgi(scope, receive, send) -> None:  # a plain function: uvicorn takes a bound method for ASGI 2
            await self._asgi(scope, receive, send)

        return asgi

    async def _health(self) -> dict[str, Any]:
        """This replica's own ``/health``."""
        request = Request({"type": "http", "method": "GET", "path": "/health", "headers": [], "query_string": b""})
        return json.loads((await self.server.health(request)).body)

    async def _report(self) -> None:
        while True:
            try:
                await self.tally.report.remote(self.id, await self._health())
            except ray.exceptions.RayError:  # the tally is being replaced: report again next time
                pass
            await asyncio.sleep(REPORT_S)

    async def _asgi(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan" and not hasattr(self, "_reporter"):
            self._reporter = asyncio.get_running_loop().create_task(self._report())
        if scope["type"] == "http" and scope["path"] == "/health":
            try:
                others = await self.tally.all.remote()
            except ray.exceptions.RayError:
                others = {}  # the tally is gone: this replica's own figures
            body = combined_health([await self._health(), *(h for k, h in others.items() if k != self.id)])
            await JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)(scope, receive, send)
            return
        await self.server(scope, receive, send)


def deployment(spec: RecognizerSpec | None = None, settings: ServerSettings | None = None, replicas: int = 1,
               cpus_per_replica: float = 1.0):
    """The Ray Serve application: ``replicas`` copies of the server, each with its model built from
    ``spec`` (default: the shipped model) and the limits of ``settings``; give it to ``serve.run``."""
    spec = spec or RecognizerSpec()
    resources = {"num_cpus": cpus_per_replica, "num_gpus": 1 if spec.on_gpu else 0}  # a GPU each, on a GPU
    return PhonestreamReplica.options(num_replicas=replicas, ray_actor_options=resources) \
        .bind(spec, settings or ServerSettings(port=8000))


def run(spec: RecognizerSpec, settings: ServerSettings, replicas: int, address: str = "local",
        on_ready=None, cpus_per_replica: float = 1.0) -> None:
    """Serve until interrupted: Ray Serve's proxy on ``settings.host:settings.port`` (``/ws``,
    ``/transcribe``, ``/health``, the page), ``replicas`` replicas behind it.

    Args:
        address: ``"local"`` attaches to a Ray instance on this machine (``ray start``) or starts one; or
            a cluster's address (``auto``, ``ray://HOST:10001``).
        on_ready: called once every replica has loaded its model.

    Raises:
        ServerError: the bind is not allowed (:func:`~phonestream.server.check_bind`).
        BatchError: Ray cannot be started or reached.
    """
    check_bind(settings)
    _check_port_free(settings.host, settings.port)
    connect_ray(address)
    try:
        serve.start(http_options={"host": settings.host, "port": settings.port})
        serve.run(deployment(spec, settings, replicas, cpus_per_replica), name="phonestream", route_prefix="/")
    except ray.exceptions.RayError as err:  # a replica that failed to start: the model's own message
        cause = err.cause if isinstance(err, ray.exceptions.RayTaskError) else err
        serve.shutdown()
        raise ServerError(f"Ray Serve could not start the server: {str(cause).strip().splitlines()[-1]}") from None
    if on_ready is not None:
        on_ready()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        try:
            ray.kill(ray.get_actor(TALLY, namespace="serve"))
        except ValueError:  # never made
            pass


def _check_port_free(host: str, port: int) -> None:
    """Ray Serve's proxy fails deep in an actor when its port is taken: say so first, in one line."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise ServerError(f"cannot listen on {host}:{port}: {err.strerror}") from None


# `serve run phonestream.ray_serve:app`: the shipped model, one replica (scale with serve's own config)
app = deployment()
