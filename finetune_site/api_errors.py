"""Every API error has OpenAI's shape: {"error": {message, type, param, code}}.

That holds for everything under /v1, not only DRF's views: unknown routes, wrong methods, bodies
refused at the front door and server errors answer in the same shape.
"""

from django.conf import settings
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from finetune_site.errors import InvalidRequest

API_PREFIX = "/v1"


def error_body(message: str, *, param: str | None = None, code: str | None = None,
               type_: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def is_api_path(path: str) -> bool:
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


def exception_handler(exc, context):
    if isinstance(exc, InvalidRequest):
        type_ = "server_error" if exc.status >= 500 else "invalid_request_error"
        return Response(error_body(exc.message, param=exc.param, code=exc.code, type_=type_), status=exc.status)
    if isinstance(exc, Http404 | exceptions.NotFound):
        message = str(exc) or "Not found."
        return Response(error_body(message, code="not_found"), status=status.HTTP_404_NOT_FOUND)
    if isinstance(exc, exceptions.ValidationError):
        param, message = first_error(exc.detail)
        return Response(error_body(message, param=param, code="invalid_value"), status=400)
    response = drf_exception_handler(exc, context)  # sets Retry-After on a 429, WWW-Authenticate on a 401
    if response is not None:
        detail = response.data.get("detail", str(exc)) if isinstance(response.data, dict) else str(exc)
        codes = exc.get_codes() if isinstance(exc, exceptions.APIException) else None
        code = codes if isinstance(codes, str) else getattr(exc, "default_code", None)
        type_ = "authentication_error" if response.status_code == 401 else "invalid_request_error"
        if isinstance(exc, exceptions.Throttled):
            type_ = "requests"  # OpenAI's type for a request-rate limit
            if code == "throttled":  # the per-key limit (DRF's own message names no limit)
                code = "rate_limit_exceeded"
                detail = (f"Rate limit reached: {settings.API_RATE_LIMIT} requests per API key. "
                          f"Try again in {exc.wait} s.")
        response.data = error_body(str(detail), code=code, type_=type_)
    return response


def first_error(detail, prefix: str = "") -> tuple[str | None, str]:
    """Walk nested serializer errors to the first message and its dotted field path."""
    if isinstance(detail, dict):
        key, value = next(iter(detail.items()))
        path = prefix if key == "non_field_errors" else (f"{prefix}.{key}" if prefix else str(key))
        return first_error(value, path)
    if isinstance(detail, list) and detail:
        return first_error(detail[0], prefix)
    return prefix or None, str(detail)


def api_error_response(message: str, *, status: int, code: str, type_: str = "invalid_request_error",
                       param: str | None = None) -> JsonResponse:
    return JsonResponse(error_body(message, param=param, code=code, type_=type_), status=status)

