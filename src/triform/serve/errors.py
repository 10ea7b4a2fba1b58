"""Errors as the OpenAI API writes them: a status, and a JSON body naming the field and what was
expected, so that a client library raises its own error types and a person can fix the request."""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from triform.serve.schemas import EXPECTED

KINDS = {400: "invalid_request_error", 404: "not_found_error", 413: "invalid_request_error", 429: "rate_limit_error"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.headers = status, message, param, headers or {}


def error_body(status: int, message: str, param: str | None = None) -> dict:
    kind = KINDS.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error_body(error.status, error.message, error.param), error.status, headers=error.headers)


def field_name(location: tuple) -> str:
    """('body', 'prompt', 0) -> 'prompt[0]'; the body itself is 'body'."""
    parts = [str(p) for p in location if p != "body"]
    name = ""
    for part in parts:
        name += f"[{part}]" if part.isdigit() else (f".{part}" if name else part)
    return name or "body"


def validation_message(error: dict) -> tuple[str, str]:
    """One pydantic error as (field, 'field: what was expected, got what')."""
    kind, location = error.get("type", ""), tuple(error.get("loc", ()))
    if kind == "json_invalid":
        return "body", f"body: not valid JSON ({error.get('ctx', {}).get('error', 'malformed')})"
    if kind == "extra_forbidden":
        return field_name(location), f"{field_name(location)}: unknown field"
    field = field_name(location)
    top = str(location[1]) if len(location) > 1 else ""
    if top in EXPECTED and kind != "missing":  # the alternatives of a union, one error each
        return top, f"{top}: expected {EXPECTED[top]}, got {shown(error.get('input'))}"
    if kind == "missing":
        return field, f"{field}: required"
    message = error.get("msg", "invalid").replace("Input should be", "expected").replace("Value error, ", "")
    return field, f"{field}: {message}, got {shown(error.get('input'))}"


def shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


async def on_validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
    errors = error.errors()
    # A union's alternatives each report an error; the first names the field as well as any.
    field, message = validation_message(errors[0]) if errors else ("body", "body: invalid")
    return JSONResponse(error_body(400, message, field), 400)


async def on_api_error(_: Request, error: ApiError) -> JSONResponse:
    return error_response(error)


async def on_http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
    return JSONResponse(error_body(error.status_code, str(error.detail)), error.status_code, headers=error.headers)


def install(app) -> None:
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
