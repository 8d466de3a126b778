"""The OpenAPI 3.1 document of the API, generated from the route table (`ENDPOINTS`).

Generated rather than written, so a route cannot exist without being documented (a test
checks both directions); the shapes of jobs, item errors and requests are JSON Schemas below.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .. import ItemError, JobStatus, Progress

if TYPE_CHECKING:
    from ._endpoint import Endpoint

_NULLABLE_NUMBER = {"type": ["number", "null"]}
_NULLABLE_STRING = {"type": ["string", "null"]}
_JSON_TYPES: dict[object, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _json_type(hint: Any) -> dict[str, Any]:
    """The JSON Schema of a field's type: a plain type, ``X | None``, or ``tuple[X, ...]``
    (an array; of references when ``X`` is a record). Any other type raises `KeyError`:
    give its schema to `_record_schema` instead."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) and args[1:] == (type(None),):
        return {"type": [_JSON_TYPES[args[0]], "null"]}
    if typing.get_origin(hint) is tuple and args[1:] == (...,):
        item = args[0]
        if isinstance(item, type) and dataclasses.is_dataclass(item):
            return {"type": "array", "items": {"$ref": f"#/components/schemas/{item.__name__}"}}
        return {"type": "array", "items": _json_type(item)}
    return {"type": _JSON_TYPES[hint]}


def _record_schema(
    cls: type, *, leave_out: tuple[str, ...] = (), **special: dict[str, Any]
) -> dict[str, Any]:
    """The schema of a record as its ``to_json`` writes it: a property per field (but those
    left out), typed from the field's annotation, or as given in ``special`` (in the field's
    place; after the fields for a name that is not one). Built from the record, so the
    document follows its fields."""
    hints = typing.get_type_hints(cls)
    properties = {
        f.name: special[f.name] if f.name in special else _json_type(hints[f.name])
        for f in dataclasses.fields(cls)
        if f.name not in leave_out
    }
    return {"type": "object", "properties": properties | special}


COMPONENTS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "properties": {"error": {"type": "string"}},
        "required": ["error"],
    },
    "Job": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "type": {"type": "string"},
            "version": {"type": "integer"},
            "spec": {"description": "the job type's spec (see /api/job-types)"},
            "status": {"enum": [s.value for s in JobStatus]},
            "priority": {"type": "integer"},
            "queue": {"type": "string"},
            "owner": _NULLABLE_STRING,
            "after": {"type": "array", "items": {"type": "string"}},
            "on_dependency_failure": {"enum": ["skip", "run"]},
            "timeout": _NULLABLE_NUMBER,
            "request": {"enum": [None, "pause", "cancel", "undo"]},
            "created": {"type": "number"},
            "started": _NULLABLE_NUMBER,
            "finished": _NULLABLE_NUMBER,
            "updated": {"type": "number"},
            "queue_time": _NULLABLE_NUMBER,
            "run_time": {"type": "number"},
            "attempts": {"type": "integer"},
            "done_items": {"type": "integer"},
            "skipped_items": {"type": "integer"},
            "done_bytes": {"type": "integer"},
            "progress": {"$ref": "#/components/schemas/Progress"},
            "result": {},
            "error": _NULLABLE_STRING,
            "can_resume": {"type": "boolean"},
        },
    },
    "Progress": _record_schema(
        Progress,
        partial={
            "type": "array",
            "description": "[stage, index, bytes] of items stopped unfinished (paused)",
            "items": {"type": "array"},
        },
        fraction=_NULLABLE_NUMBER,  # added by the view (`Progress.fraction`)
    ),
    "ItemError": _record_schema(ItemError, leave_out=("traceback",)),
    "SubmitRequest": {
        "type": "object",
        "properties": {
            "type": {"type": "string", "description": "a registered job type"},
            "spec": {"type": "object", "description": "validated against the type's schema"},
            "priority": {"type": "integer"},
            "queue": {"type": "string"},
            "after": {"type": "array", "items": {"type": "string"}},
            "on_dependency_failure": {"enum": ["skip", "run"]},
            "idempotency_key": {"type": "string"},
            "owner": {"type": "string", "description": "operator tokens only"},
            "start": {"type": "boolean", "description": "false: store it paused"},
            "detach": {
                "type": "boolean",
                "description": "true: queue it for the store's workers, not this server",
            },
            "timeout": {"type": "number"},
        },
        "required": ["type", "spec"],
        "additionalProperties": False,
    },
    "PatchRequest": {
        "type": "object",
        "properties": {"priority": {"type": "integer"}},
        "required": ["priority"],
        "additionalProperties": False,
    },
}


def openapi_document(endpoints: Iterable[Endpoint], *, version: str) -> dict[str, Any]:
    """The document: one operation per endpoint, bearer auth unless the endpoint is public."""
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        operation: dict[str, Any] = {
            "operationId": e.handler.__name__,
            "summary": e.summary,
            "responses": {
                str(code): _response(code, text, e) for code, text in sorted(e.responses.items())
            },
        }
        if e.auth:
            operation["responses"].setdefault("401", _response(401, "no valid token", e))
        else:
            operation["security"] = []
        if e.params:
            operation["parameters"] = [
                {
                    "name": name,
                    "in": where,
                    "required": where == "path",
                    "description": doc,
                    "schema": {"type": "string"},
                }
                for name, where, doc in e.params
            ]
        if e.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{e.body}"}}
                },
            }
        paths.setdefault(e.path, {})[e.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "parjobs serve", "version": version},
        "paths": paths,
        "components": {
            "schemas": COMPONENTS,
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"token": []}],
    }


def _response(code: int, text: str, endpoint: Endpoint) -> dict[str, Any]:
    out: dict[str, Any] = {"description": text}
    if code >= 400:
        out["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    elif code == 201 or (code == 200 and "job" in text and "jobs" not in text):
        out["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}
    return out
