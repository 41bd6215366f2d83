"""Reading request bodies into models and writing models out (the JSON edges of the API)."""

from __future__ import annotations

from typing import TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from inbox_common.http import ApiError, json_response

ModelT = TypeVar("ModelT", bound=BaseModel)


async def read_body(request: web.Request, model: type[ModelT]) -> ModelT:
    """The request's JSON body as ``model``: 400 when it is not JSON, 422 naming every
    field that is wrong."""
    raw = await request.read()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = [
            {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
            for e in exc.errors(include_url=False)
        ]
        first = details[0]
        raise ApiError(
            422, "validation_error", f"{first['field']}: {first['message']}", details
        ) from None


def out(model: BaseModel, status: int = 200) -> web.Response:
    return json_response(model.model_dump(mode="json"), status=status)
