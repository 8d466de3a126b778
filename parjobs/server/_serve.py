"""Running the app with Hypercorn's trio worker inside the caller's trio run.

`serve` binds (port 0 picks a free port), reports the real address through ``task_status``
(``await nursery.start(serve, ...)``), and serves until ``shutdown_trigger`` returns. Then it
ends every event stream first (they would otherwise hold the graceful shutdown open) and lets
Hypercorn finish the requests in flight.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
from collections.abc import Awaitable, Callable

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from .. import JobManager, ParjobsError
from ._app import ServerState, create_app
from ._auth import Principal, ensure_default_tokens, host_names, is_loopback, load_tokens
from ._events import EventHub


class ServeError(ParjobsError):
    """The server cannot start as asked (e.g. a public address without a token file)."""


@dataclasses.dataclass(frozen=True)
class ServerInfo:
    """Where a started server listens, and the URL that logs a browser in."""

    host: str
    port: int
    token: str = dataclasses.field(repr=False)
    token_file: str

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """``http://HOST:PORT/?token=TOKEN``: opening it sets the session cookie."""
        return f"{self.base_url}/?token={self.token}"


def resolve_tokens(host: str, token_file: str | None) -> tuple[str, list[Principal]]:
    """The token file and its tokens: ``token_file`` when given; else, for a loopback
    address only, the default one (created on first use)."""
    if token_file is not None:
        return token_file, load_tokens(token_file)
    if not is_loopback(host):
        raise ServeError(
            f"refusing to serve on {host} (reachable from other machines) without "
            "--token-file: write the tokens yourself and give the file"
        )
    return ensure_default_tokens()


async def serve(
    manager: JobManager,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    token_file: str | None = None,
    allowed_hosts: tuple[str, ...] = (),
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    hub: EventHub | None = None,
    graceful_timeout: float = 5.0,
    task_status: trio.TaskStatus[ServerInfo] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``manager``'s API on ``host:port`` until ``shutdown_trigger`` returns (or the
    caller's scope is cancelled). Start it with ``info = await nursery.start(serve, ...)``.
    ``allowed_hosts`` adds ``Host`` names (``name:port``) to those of the bound address."""
    path, tokens = resolve_tokens(host, token_file)
    sock = _bind(host, port)  # bound here: the real port is known before the app is built
    bound_port = int(sock.getsockname()[1])
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # Hypercorn's socket object owns the fd now
    config.graceful_timeout = graceful_timeout
    config.accesslog = None
    config.errorlog = logging.getLogger("parjobs.server")
    names = host_names(host, bound_port)
    app = create_app(
        manager,
        tokens=tokens,
        allowed_hosts=names | {h.lower() for h in allowed_hosts} if names else (),
        cookie_name=f"parjobs_token_{bound_port}",
        hub=hub,
        token_file=path,
    )
    state: ServerState = app.state  # type: ignore[attr-defined]

    async def trigger() -> None:
        if shutdown_trigger is None:
            await trio.sleep_forever()
        else:
            await shutdown_trigger()
        state.hub.close()  # end the event streams so the graceful shutdown is quick

    info = ServerInfo(host=host, port=bound_port, token=tokens[0].token, token_file=path)

    async def run(task_status: trio.TaskStatus[list[str]]) -> None:
        await hypercorn_serve(
            app,  # type: ignore[arg-type]  # a plain ASGI 3 callable
            config,
            shutdown_trigger=trigger,
            task_status=task_status,
        )

    async with trio.open_nursery() as nursery:
        await nursery.start(run)
        task_status.started(info)


def _bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket bound to ``host:port`` (0: a free port)."""
    if not 0 <= port <= 65535:
        raise ServeError(f"port must be between 0 and 65535, got {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ServeError(f"cannot serve on {host}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot serve on {host}:{port}: {exc.strerror}") from None
    return sock
