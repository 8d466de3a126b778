"""What one route of the API is: the record the router and the OpenAPI document share."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

Handler = Callable[[Request], Awaitable[Response]]


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One route: the router and the OpenAPI document are both made from these."""

    method: str
    path: str
    handler: Handler
    summary: str
    responses: dict[int, str]
    params: tuple[tuple[str, str, str], ...] = ()  # (name, "query"|"path"|"header", doc)
    body: str | None = None  # the request body's schema name in components
    auth: bool = True
    admin: bool = False  # refused (403) to owner-bound tokens
