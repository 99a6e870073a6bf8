"""OpenAPI for bodies our handlers decode themselves (litestar's own binding would coerce "12"
into 12): the schema comes from the same msgspec type the handler decodes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    Parameter,
    RequestBody,
)


def inline_schema(kind: type) -> dict[str, Any]:
    """msgspec's JSON Schema for `kind`, its $defs inlined: litestar rewrites
    components/schemas from its own registry, so a body schema must stand alone."""
    schema = msgspec.json.schema(kind)
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    inlined: dict[str, Any] = inline(schema)
    return inlined


def body_operation(
    kind: type,
    *headers: Parameter,
    required: bool = True,
    answers: dict[str, OpenAPIResponse] | None = None,
) -> type[Operation]:
    """An Operation that documents a JSON body of `kind` (and extra header parameters)."""
    return schema_operation(inline_schema(kind), *headers, required=required, answers=answers)


def schema_operation(
    schema: dict[str, Any],
    *headers: Parameter,
    required: bool = True,
    answers: dict[str, OpenAPIResponse] | None = None,
) -> type[Operation]:
    """An Operation that documents a JSON body of the JSON Schema `schema` (optional unless
    `required`), and `answers` by status, written out where litestar cannot write them."""

    @dataclass
    class WithBody(Operation):
        def __post_init__(self) -> None:
            self.parameters = [*(self.parameters or []), *headers]
            self.request_body = RequestBody(
                required=required,
                content={"application/json": json_schema(schema)},
            )
            self.responses = {**(self.responses or {}), **(answers or {})}

    return WithBody


def json_schema(schema: dict[str, Any]) -> OpenAPIMediaType:
    """A JSON media type of the JSON Schema `schema`."""
    # msgspec writes the JSON Schema; litestar serializes plain dicts as they are
    return OpenAPIMediaType(schema=schema)  # type: ignore[arg-type]
