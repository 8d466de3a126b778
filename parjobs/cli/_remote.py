"""Which server ``parjobs --server URL ...`` talks to, and with which token.

With ``--server`` (or ``$PARJOBS_SERVER``), the commands that list, show, steer and run jobs
talk to a running ``parjobs serve`` instead of opening the store: `Store.choose` then names
the server, and `manager_for` yields the HTTP client of `_client` (a `JobManager` look-alike),
so the commands, their output and their exit codes are the very same code as for a local
store. This module only settles the address and the token: it imports no HTTP client, so a
CLI run without ``--server`` loads none.
"""

from __future__ import annotations

import argparse
import contextvars
import dataclasses
import os
import urllib.parse

from .._util import state_dir
from ._errors import CliError

#: The commands that work through a server; the others (``serve``, ``demo``) run here.
REMOTE_COMMANDS = frozenset(
    {"jobs", "show", "pause", "resume", "cancel", "undo"}
    | {"copy", "move", "delete", "hash", "dupes", "thumbnails"}
)


@dataclasses.dataclass(frozen=True)
class Server:
    """A server to talk to: its base URL (no token in it), the token, and whether the URL
    was given on the command line (then the commands printed for later repeat it)."""

    url: str
    token: str = dataclasses.field(repr=False)
    explicit: bool


#: The server of this command run (None: the local store), set by `main` before the run.
SERVER: contextvars.ContextVar[Server | None] = contextvars.ContextVar(
    "parjobs_server", default=None
)


def server_from(args: argparse.Namespace) -> Server | None:
    """The server the command talks to: ``--server``, else ``$PARJOBS_SERVER`` (ignored by
    the commands that always run here), else None. The token is the first found of: the
    URL's ``?token=`` (the line ``parjobs serve`` prints), ``--token-file``,
    ``$PARJOBS_TOKEN``, the default token file of ``parjobs serve``."""
    option = getattr(args, "server", None)
    if option is not None and args.command not in REMOTE_COMMANDS:
        raise CliError(f"--server does not apply to '{args.command}', which runs here")
    text = option or os.environ.get("PARJOBS_SERVER") or None
    if text is None or args.command not in REMOTE_COMMANDS:
        return None
    url, token = _split_url(text)
    token = token or _token(getattr(args, "token_file", None))
    return Server(url=url, token=token, explicit=option is not None)


def _split_url(text: str) -> tuple[str, str | None]:
    """``http://HOST:PORT/prefix?token=T`` -> (``http://HOST:PORT/prefix``, ``T``); a bare
    ``HOST:PORT`` gets ``http://``."""
    if "://" not in text:
        text = "http://" + text
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(f"--server: expected a URL such as http://127.0.0.1:8765, got {text!r}")
    token = urllib.parse.parse_qs(parts.query).get("token", [None])[0]
    base = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    return base, token


def _token(token_file: str | None) -> str:
    if token_file is not None:
        return _first_token(token_file)
    token = os.environ.get("PARJOBS_TOKEN")
    if token:
        return token.strip()
    path = default_token_path()
    if os.path.exists(path):
        return _first_token(path)
    raise CliError(
        "no token for the server: give --token-file FILE or set $PARJOBS_TOKEN "
        f"(no {path} on this machine)"
    )


def default_token_path() -> str:
    """``parjobs serve``'s default token file: ``$XDG_STATE_HOME/parjobs/serve-tokens``."""
    return os.path.join(state_dir(), "serve-tokens")


def _first_token(path: str) -> str:
    """The first token of a token file (the format of ``parjobs serve --token-file``)."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                words = line.split()
                if words and not words[0].startswith("#"):
                    return words[0]
    except OSError as exc:
        raise CliError(f"cannot read the token file {path}: {exc.strerror}") from None
    raise CliError(f"the token file {path} holds no token")
