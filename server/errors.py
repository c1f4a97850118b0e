"""One error shape for every response: ``{"error": {"code": "...", "message": "..."}}``.

Handlers raise `ApiError`; the middleware turns it, aiohttp's own HTTP exceptions (404, 405,
413 ...), store and image errors, and anything unexpected into that JSON. Unexpected errors are
logged with their type and traceback only — never the request body.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Mapping

from aiohttp import web

log = logging.getLogger("faceprov.server")

# aiohttp's own exceptions -> our codes
_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 406: "not_acceptable", 408: "request_timeout", 411: "length_required",
    413: "body_too_large", 414: "uri_too_long", 415: "unsupported_media_type", 422: "unprocessable",
    429: "rate_limited", 431: "headers_too_large", 500: "internal", 501: "not_implemented",
    503: "unavailable", 504: "timeout",
}

# faceprov.faces.io.ImageError codes -> HTTP status
IMAGE_STATUS = {
    "empty": 400,
    "corrupt": 400,
    "too_large": 413,
    "too_many_pixels": 413,
    "unsupported_type": 415,
    "too_small": 422,
    "no_face": 422,
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str,
                 headers: Mapping[str, str] | None = None, extra: Mapping[str, Any] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


def error_body(code: str, message: str, **extra: Any) -> dict:
    return {"error": {"code": code, "message": message}, **extra}


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None,
                   **extra: Any) -> web.Response:
    return web.Response(status=status, text=json.dumps(error_body(code, message, **extra)),
                        content_type="application/json", headers=headers)


def from_exception(e: BaseException) -> ApiError | None:
    """Known library exceptions -> ApiError (None for unknown ones)."""
    from faceprov.faces.io import ImageError
    from faceprov.store.db import InvalidInput, NotFound, PermissionDenied

    from aiohttp.http_exceptions import HttpProcessingError
    from aiohttp.web_protocol import RequestPayloadError

    if isinstance(e, ApiError):
        return e
    from faceprov.assets import AssetError
    from faceprov.recognizers.base import RecognizerUnavailable

    if isinstance(e, (RecognizerUnavailable, AssetError)):  # e.g. refine needs recognizers not installed
        return ApiError(503, "recognizer_unavailable", f"a model this request needs is not available here: {e}")
    if isinstance(e, (HttpProcessingError, RequestPayloadError)):  # e.g. a body whose Content-Encoding does not decode
        return ApiError(400, "bad_body", f"the request body could not be read ({type(e).__name__})")
    if isinstance(e, ImageError):
        code = getattr(e, "code", "bad_image")
        return ApiError(IMAGE_STATUS.get(code, 400), code, str(e))
    if isinstance(e, NotFound):
        return ApiError(404, "not_found", str(e))
    if isinstance(e, PermissionDenied):
        return ApiError(403, "forbidden", str(e))
    if isinstance(e, InvalidInput):
        return ApiError(400, "invalid_input", str(e))
    return None


@web.middleware
async def error_middleware(request: web.Request, handler):
    try:
        resp = await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = _HTTP_CODES.get(e.status, "http_error")
        msg = e.reason or code
        if e.status == 413:
            msg = f"the request body is larger than the limit of {request.app[_max_body_key()]} bytes"
        elif e.status == 405:
            msg = f"{request.method} is not allowed on {request.path}"
        elif e.status == 404:
            msg = f"no route {request.path}"
        headers = {k: v for k, v in e.headers.items() if k.lower() in ("allow", "retry-after")}
        return error_response(e.status, code, msg, headers=headers)
    except Exception as e:  # noqa: BLE001
        api = from_exception(e)
        if api is None:
            # type and traceback only: the exception message could quote input
            log.error("unhandled %s in %s %s", type(e).__name__, request.method, request.path,
                      exc_info=(type(e), e.with_traceback(e.__traceback__), e.__traceback__))
            return error_response(500, "internal", "internal server error")
        return error_response(api.status, api.code, api.message, headers=api.headers, **api.extra)
    return resp


def _max_body_key():
    from .state import MAX_BODY

    return MAX_BODY
