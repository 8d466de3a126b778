"""``parjobs serve``: an HTTP API, live events and metrics for a running `JobManager`.

Needs the ``[server]`` extra (``pip install 'parjobs[server]'``): Starlette, Hypercorn and
prometheus-client. Two entry points:

- `create_app` builds the ASGI app from a manager (any ASGI server running on trio may host
  it);
- `serve` runs it with Hypercorn's trio worker inside the caller's trio run:
  ``info = await nursery.start(serve, manager)``.

See docs/serve.md for the API, the token file format and what is not built yet.
"""

from ._app import ENDPOINTS as ENDPOINTS
from ._app import create_app as create_app
from ._auth import Principal as Principal
from ._auth import TokenFileError as TokenFileError
from ._auth import default_token_path as default_token_path
from ._auth import load_tokens as load_tokens
from ._auth import parse_tokens as parse_tokens
from ._events import EventHub as EventHub
from ._events import HubLimits as HubLimits
from ._serve import ServeError as ServeError
from ._serve import ServerInfo as ServerInfo
from ._serve import resolve_tokens as resolve_tokens
from ._serve import serve as serve

__all__ = [
    "ENDPOINTS",
    "EventHub",
    "HubLimits",
    "Principal",
    "ServeError",
    "ServerInfo",
    "TokenFileError",
    "create_app",
    "default_token_path",
    "load_tokens",
    "parse_tokens",
    "resolve_tokens",
    "serve",
]
