"""Finance API errors in one envelope, scoped so the webhook route keeps its own answers."""

from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, PlainTextResponse, Response

from webhook_listener.api_models import ErrorDetail, ErrorEnvelope

API_PREFIX = "/api/v1/platform/finance"

HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed"}


class ApiError(Exception):
    """An answer of the Finance API other than 200; the message is shown to the caller."""

    def __init__(
        self, status_code: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(
    status_code: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    envelope = ErrorEnvelope(error=ErrorDetail(code=code, message=message))
    return JSONResponse(envelope.model_dump(), status_code=status_code, headers=headers)


def is_api_path(request: Request) -> bool:
    path = request.url.path
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status_code, exc.code, exc.message, exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if not is_api_path(request):
        return await http_exception_handler(request, exc)
    code = HTTP_ERROR_CODES.get(exc.status_code, "http_error")
    # Keep Starlette's headers: a 405 names the allowed methods in Allow.
    return error_response(exc.status_code, code, str(exc.detail), exc.headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    if not is_api_path(request):
        return await request_validation_exception_handler(request, exc)
    return error_response(400, "invalid_request", "the request is not valid for this endpoint")


async def _server_error(request: Request, exc: Exception) -> Response:
    # Starlette logs the traceback after this answer is sent; the caller gets no details.
    if not is_api_path(request):
        return PlainTextResponse("Internal Server Error", status_code=500)
    return error_response(500, "internal_error", "an unexpected error; see the listener's log")


def install_error_handlers(app: FastAPI) -> None:
    """Answer every Finance API error, 404, 405, 422 and 500 included, in the error envelope."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _server_error)
