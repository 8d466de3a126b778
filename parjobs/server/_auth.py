"""Tokens and the request gate of `parjobs serve`: who may call, from where.

Every request except ``GET /healthz`` needs a valid token, also on localhost: a browser page on
any site can reach ``127.0.0.1``, and other users of the machine can reach its ports. The gate
is a plain ASGI middleware (it wraps the whole app, streaming responses included) that checks,
in this order:

1. the token: ``Authorization: Bearer TOKEN``, or the session cookie, or (for a page, not the
   API) ``?token=TOKEN``, which is swapped for an HttpOnly, SameSite=Strict cookie by a redirect
   to the same URL without it, so the token leaves the address bar and the history. Anything
   else gets 401 and nothing else (no hint whether a route or a job exists);
2. the ``Host`` header against the names the server was bound to (DNS rebinding: a hostile
   name that resolves to 127.0.0.1 must not reach the API with the user's cookie);
3. on state-changing methods, ``Origin`` (when sent) against the ``Host`` (cross-site forms).

The token file holds one token per line, optionally bound to an owner (see `load_tokens`).
Given its path, the gate reads it again when it changed, looking at most every
`TOKEN_FILE_FRESH` seconds, in a thread: a token removed from the file is refused within that
long, not at the next restart; a file that can no longer be used (gone, readable by others,
malformed) refuses every token until it is fixed, and says why on the ``parjobs.server``
logger. A streamed response (an event stream) whose token no longer holds ends at its next
chunk. A token file that hangs (a home on an unreachable NFS server) holds up the requests
that need it, not the event loop (the jobs and ``/healthz`` go on), and those for at most
`TOKEN_FILE_WAIT` seconds: then they are answered 503, an open event stream ends.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import logging
import math
import os
import secrets
import stat
from collections.abc import Iterable
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

import trio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import ParjobsError
from .._util import state_dir

_log = logging.getLogger("parjobs.server")

#: The scope key under which the gate leaves the caller's `Principal` for the endpoints.
PRINCIPAL_KEY = "parjobs.principal"
#: Shortest token accepted from a token file (a generated one has 43 characters).
MIN_TOKEN_LENGTH = 16
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: How long the gate trusts its last look at its token file (seconds, trio time): a token
#: taken out of the file is refused within this long. A look is a thread's read of the file
#: (0.3 ms at load 16 against a 1 us ``stat``): once a second, not per request and per
#: event-stream chunk. A module attribute, read at each request.
TOKEN_FILE_FRESH = 1.0
#: How long a request waits for a look at the token file (seconds) before it is answered
#: 503: a file that hangs (an unreachable NFS home) leaves no request waiting for good.
TOKEN_FILE_WAIT = 10.0


class TokenFileError(ParjobsError):
    """A token file that cannot be used: missing, malformed, or readable by others."""


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """Who a token speaks for: ``owner`` None sees and steers every job (an operator);
    an owner-bound token sees and steers only the jobs of that owner."""

    token: str = dataclasses.field(repr=False)
    owner: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.owner is None


def default_token_path() -> str:
    """``$XDG_STATE_HOME/parjobs/serve-tokens`` (``~/.local/state/parjobs/serve-tokens``)."""
    return os.path.join(state_dir(), "serve-tokens")


def parse_tokens(text: str, *, where: str = "token file") -> list[Principal]:
    """Parse the token file format: one token per line, ``TOKEN`` or ``TOKEN owner=NAME``;
    blank lines and lines starting with ``#`` are ignored. Tokens are at least
    `MIN_TOKEN_LENGTH` printable characters without spaces, and unique."""
    out: list[Principal] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        token, options = words[0], words[1:]
        if len(token) < MIN_TOKEN_LENGTH or not token.isprintable():
            raise TokenFileError(
                f"{where}, line {number}: a token needs at least {MIN_TOKEN_LENGTH} characters"
            )
        if token in seen:
            raise TokenFileError(f"{where}, line {number}: the same token appears twice")
        seen.add(token)
        owner: str | None = None
        for option in options:
            key, sep, value = option.partition("=")
            if key != "owner" or not sep or not value or owner is not None:
                raise TokenFileError(
                    f"{where}, line {number}: expected 'TOKEN' or 'TOKEN owner=NAME', "
                    f"got {option!r}"
                )
            owner = value
        out.append(Principal(token=token, owner=owner))
    if not out:
        raise TokenFileError(f"{where} holds no token")
    return out


def load_tokens(path: str) -> list[Principal]:
    """Read a token file, refusing one that others may read (like ssh with its keys)."""
    tokens = _read_tokens(path)[1]
    if isinstance(tokens, TokenFileError):
        raise tokens
    return tokens


def _read_tokens(path: str) -> tuple[tuple[object, ...], list[Principal] | TokenFileError]:
    """The token file as it is now: what tells it from the one read before (its device,
    inode, mode, owner and bytes: a rewrite of the same size within one mtime tick has the
    same ``stat``), and its tokens or why it cannot be used."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return ("missing",), TokenFileError(f"token file {path} does not exist")
    except OSError as exc:
        return ("unreadable", exc.errno), TokenFileError(
            f"cannot read token file {path}: {exc.strerror}"
        )
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        key: tuple[object, ...] = (info.st_dev, info.st_ino, info.st_mode, info.st_uid)
        if not stat.S_ISREG(info.st_mode):
            return key, TokenFileError(f"token file {path} is not a regular file")
        if info.st_mode & 0o077:
            return key, TokenFileError(
                f"token file {path} is accessible by other users (mode "
                f"{stat.S_IMODE(info.st_mode):o}): run 'chmod 600 {path}'"
            )
        data = f.read()
    key += (data,)
    try:
        return key, parse_tokens(data.decode("utf-8"), where=f"token file {path}")
    except UnicodeDecodeError:
        return key, TokenFileError(f"token file {path} is not UTF-8 text")
    except TokenFileError as exc:
        return key, exc


def ensure_default_tokens(path: str | None = None) -> tuple[str, list[Principal]]:
    """The default token file, created with one random token (file 0600 in a 0700 directory)
    when it does not exist yet, so the printed URL stays the same across restarts."""
    path = path or default_token_path()
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return path, load_tokens(path)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(
            "# parjobs serve tokens: one per line, 'TOKEN' (sees every job) or\n"
            "# 'TOKEN owner=NAME' (sees only NAME's jobs). The first one is printed.\n"
            f"{token}\n"
        )
    return path, load_tokens(path)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` exposes the server to this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_names(host: str, port: int) -> frozenset[str]:
    """The ``Host`` header values a server bound to ``host:port`` answers to (lowercase);
    empty for a wildcard address (0.0.0.0, ::), where any name may reach it."""
    bare = host.strip("[]").lower()
    if bare in ("", "0.0.0.0", "::"):
        return frozenset()
    names = {bare}
    if is_loopback(bare):
        names |= {"localhost", "127.0.0.1", "::1"}
    out = set()
    for name in names:
        shown = f"[{name}]" if ":" in name else name
        out.add(f"{shown}:{port}")
        if port == 80:
            out.add(shown)
    return frozenset(out)


class AuthGate:
    """ASGI middleware: token, Host and Origin checks in front of ``app`` (see the module
    docstring). ``allowed_hosts`` empty means any ``Host``; ``cookie_name`` should carry the
    port, since browsers share cookies across the ports of one host. With ``token_file``
    (the file ``tokens`` were read from) the tokens follow the file as it changes."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        tokens: Iterable[Principal],
        allowed_hosts: Iterable[str] = (),
        cookie_name: str = "parjobs_token",
        public_paths: Iterable[str] = ("/healthz",),
        token_file: str | None = None,
    ) -> None:
        self.app = app
        self.tokens = list(tokens)
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts)
        self.cookie_name = cookie_name
        self.public_paths = frozenset(public_paths)
        self.token_file = token_file
        self._key: tuple[object, ...] | None = None  # the file last read (`_read_tokens`)
        self._looked = -math.inf  # when the last look at it began (trio time)
        self._looking = trio.Lock()  # one look at a time; the requests meanwhile wait for it
        #: The looks' own thread: one that hangs (NFS) holds no thread another call needs,
        #: and no second one starts.
        self._look_limiter = trio.CapacityLimiter(1)

    async def _follow_token_file(self) -> bool:
        """Take the token file's tokens again if it changed since it was read, looking at
        most every `TOKEN_FILE_FRESH` seconds, in a thread: a ``stat`` on the event loop
        per request and per event-stream chunk stalled the whole server (the jobs too)
        when the file hung, and the ``stat`` missed a rewrite of the same size within one
        mtime tick (the bytes are compared now). False when the look did not answer within
        `TOKEN_FILE_WAIT` seconds: no token can be trusted now (the look that hangs is left
        to its thread, which no other look shares)."""
        if self.token_file is None or trio.current_time() < self._looked + TOKEN_FILE_FRESH:
            return True
        with trio.move_on_after(TOKEN_FILE_WAIT):
            async with self._looking:
                began = trio.current_time()
                if began >= self._looked + TOKEN_FILE_FRESH:  # (else looked while it waited)
                    key, tokens = await trio.to_thread.run_sync(
                        _read_tokens,
                        self.token_file,
                        limiter=self._look_limiter,
                        abandon_on_cancel=True,
                    )
                    self._looked = began
                    self._take(key, tokens)
            return True
        return False

    def _take(self, key: tuple[object, ...], tokens: list[Principal] | TokenFileError) -> None:
        """What a look found: the tokens of a file that changed, or none (and a warning)
        when it cannot be used any more."""
        if key == self._key:
            return
        self._key = key
        if isinstance(tokens, TokenFileError):
            self.tokens = []  # revoked or exposed: no token is trusted until it is fixed
            _log.warning("%s: every request is refused until it is fixed", tokens)
        else:
            self.tokens = tokens

    def principal(self, token: str | None) -> Principal | None:
        """The principal of ``token`` (compared in constant time against every token)."""
        if not token:
            return None
        found = None
        for entry in self.tokens:
            if hmac.compare_digest(entry.token.encode(), token.encode()):
                found = entry
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan (websockets are not served)
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if path in self.public_paths:
            await self.app(scope, receive, send)
            return
        if not await self._follow_token_file():
            await _reply(send, 503, b'{"error": "the token file does not answer"}')
            return
        headers = _headers(scope)
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        query_token = next((v for k, v in query if k == "token"), None)
        bearer = headers.get("authorization", "")
        token: str | None = None
        if bearer[:7].lower() == "bearer ":
            token = bearer[7:].strip()
        elif query_token is not None and method == "GET" and not path.startswith("/api/"):
            token = query_token
        else:
            cookie = SimpleCookie()
            try:
                cookie.load(headers.get("cookie", ""))
            except Exception:  # a malformed Cookie header is no token
                cookie = SimpleCookie()
            morsel = cookie.get(self.cookie_name)
            token = morsel.value if morsel is not None else None
        principal = self.principal(token)
        if principal is None:
            await _reply(send, 401, b'{"error": "unauthorized"}', [_bearer_challenge])
            return
        host = headers.get("host", "").lower()
        if self.allowed_hosts and host not in self.allowed_hosts:
            await _reply(send, 403, b'{"error": "this server is not reached by that host name"}')
            return
        if method in _UNSAFE_METHODS and not _same_origin(headers, host):
            await _reply(send, 403, b'{"error": "cross-origin request refused"}')
            return
        if token == query_token and query_token is not None and not bearer:
            # Swap the token in the address bar for a cookie, then reload without it.
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            location = path + ("?" + rest if rest else "")
            cookie_header = (
                f"{self.cookie_name}={principal.token}; HttpOnly; SameSite=Strict; Path=/"
            )
            await _reply(
                send,
                303,
                b"",
                [
                    (b"location", location.encode("latin-1")),
                    (b"set-cookie", cookie_header.encode()),
                ],
                content_type=None,
            )
            return
        if self.token_file is None:
            await self.app({**scope, PRINCIPAL_KEY: principal}, receive, send)
            return

        async def send_while_trusted(message: Message) -> None:
            """Send ``message``; end a streamed response (the event streams) at its next
            chunk once its token no longer gives this principal: taken out of the file, a
            dashboard's open stream kept showing the jobs' events for as long as it stayed
            open."""
            if message["type"] == "http.response.body" and message.get("more_body", False):
                trusted = await self._follow_token_file()
                if not trusted or self.principal(token) != principal:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    raise _Revoked
            await send(message)

        try:
            await self.app({**scope, PRINCIPAL_KEY: principal}, receive, send_while_trusted)
        except* _Revoked:
            pass


class _Revoked(Exception):
    """Raised into the app by `AuthGate` to stop a response whose token was revoked."""


_bearer_challenge = (b"www-authenticate", b'Bearer realm="parjobs"')


def _headers(scope: Scope) -> dict[str, str]:
    """Request headers by lowercase name (the last of repeated ones)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _same_origin(headers: dict[str, str], host: str) -> bool:
    """False for a browser's cross-site request: an ``Origin`` that is not this host, or
    ``Sec-Fetch-Site: cross-site``. Non-browser clients send neither and pass."""
    if headers.get("sec-fetch-site", "") == "cross-site":
        return False
    origin = headers.get("origin")
    if origin is None:
        return True
    scheme, sep, rest = origin.lower().partition("://")
    return bool(sep) and scheme in ("http", "https") and rest == host


async def _reply(
    send: Send,
    status: int,
    body: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
    *,
    content_type: bytes | None = b"application/json",
) -> None:
    headers: list[tuple[bytes, bytes]] = [(b"content-length", str(len(body)).encode())]
    if content_type is not None:
        headers.append((b"content-type", content_type))
    headers += extra or []
    start: dict[str, Any] = {"type": "http.response.start", "status": status, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": body})
