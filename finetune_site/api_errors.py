"""Every API error has OpenAI's shape: {"error": {message, type, param, code}}."""

from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from finetune_site.errors import InvalidRequest


def error_body(message: str, *, param: str | None = None, code: str | None = None,
               type_: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def exception_handler(exc, context):
    if isinstance(exc, InvalidRequest):
        type_ = "server_error" if exc.status >= 500 else "invalid_request_error"
        return Response(error_body(exc.message, param=exc.param, code=exc.code, type_=type_), status=exc.status)
    if isinstance(exc, Http404 | exceptions.NotFound):
        message = str(exc) or "Not found."
        return Response(error_body(message, code="not_found"), status=status.HTTP_404_NOT_FOUND)
    if isinstance(exc, exceptions.ValidationError):
        param, message = _first_error(exc.detail)
        return Response(error_body(message, param=param, code="invalid_value"), status=400)
    response = drf_exception_handler(exc, context)
    if response is not None:
        detail = response.data.get("detail", str(exc)) if isinstance(response.data, dict) else str(exc)
        type_ = "authentication_error" if response.status_code == 401 else "invalid_request_error"
        code = getattr(exc, "default_code", None)
        response.data = error_body(str(detail), code=code, type_=type_)
    return response


def _first_error(detail, prefix: str = "") -> tuple[str | None, str]:
    """Walk nested serializer errors to the first message and its dotted field path."""
    if isinstance(detail, dict):
        key, value = next(iter(detail.items()))
        path = prefix if key == "non_field_errors" else (f"{prefix}.{key}" if prefix else str(key))
        return _first_error(value, path)
    if isinstance(detail, list) and detail:
        return _first_error(detail[0], prefix)
    return prefix or None, str(detail)
