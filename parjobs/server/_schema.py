"""JSON Schemas of job specs, generated from the spec dataclass's fields and type hints.

The API's clients and the dashboard's forms are built from these, so they follow the job
types as they change instead of drifting from a hand-written copy. The mapping mirrors what
`parjobs.Job.from_spec` accepts (the JSON types of docs/concepts.md), so a document valid
against the schema passes the type checks of ``from_spec`` (``validate()`` may still refuse
values, e.g. a missing source).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Literal

from .. import Job
from .._job import spec_hints


def spec_schema(cls: type[Job]) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``cls``'s spec: an object of its stored fields,
    required where they have no default, with the defaults shown."""
    hints = spec_hints(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        if field.metadata.get("parjobs_runtime"):
            continue
        schema = type_schema(hints[field.name])
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            required.append(field.name)
        else:
            default = _default(field)
            if default is not dataclasses.MISSING:
                schema = {**schema, "default": default}
        properties[field.name] = schema
    doc = (cls.__doc__ or "").strip()
    out: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": cls.job_type_name,
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    if doc:
        out["description"] = doc.split("\n\n")[0].replace("\n", " ")
    return out


def type_schema(hint: Any) -> dict[str, Any]:
    """The schema of one annotation (see the module docstring for what is supported)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any or hint is object:
        return {}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [type_schema(a) for a in args]}
    if hint is type(None):
        return {"type": "null"}
    if origin is Literal:
        return {"enum": list(args)}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if hint in simple:
        return {"type": simple[hint]}
    if origin in (list, tuple) or hint in (list, tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return {
                "type": "array",
                "prefixItems": [type_schema(a) for a in args],
                "minItems": len(args),
                "maxItems": len(args),
            }
        item = args[0] if args else Any
        return {"type": "array", "items": type_schema(item)}
    if origin is dict or hint is dict:
        value = args[1] if len(args) == 2 else Any
        return {"type": "object", "additionalProperties": type_schema(value)}
    return {}  # from_spec refuses such a field; say nothing rather than something wrong


def _default(field: dataclasses.Field[Any]) -> Any:
    """The field's default as JSON data, or MISSING when it is not JSON data."""
    missing = field.default is dataclasses.MISSING
    value = field.default_factory() if missing else field.default  # type: ignore[operator]
    if isinstance(value, tuple):
        value = list(value)
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return dataclasses.MISSING
    return value
