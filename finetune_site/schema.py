"""The OpenAPI schema's finishing touches (a drf-spectacular postprocessing hook).

Every /v1 operation documents the errors it can answer with, in OpenAI's shape, and a GET of a
collection is named ``…_list`` (plain APIViews would otherwise name it ``…_retrieve`` like the
GET of one item, and the two operationIds would collide).
"""

ERROR_SCHEMA = {
    "type": "object",
    "description": "OpenAI's error shape.",
    "properties": {"error": {
        "type": "object",
        "properties": {
            "message": {"type": "string", "description": "What went wrong and how to fix it."},
            "type": {"type": "string", "example": "invalid_request_error"},
            "param": {"type": "string", "nullable": True, "description": "The input at fault, dotted."},
            "code": {"type": "string", "nullable": True, "example": "invalid_value"},
        },
        "required": ["message", "type", "param", "code"],
    }},
    "required": ["error"],
}
ERRORS = {
    "400": "The request is malformed or a parameter is invalid; `param` names it.",
    "401": "No API key, or one that is unknown, revoked or expired.",
    "404": "No such object, or it belongs to someone else (the two look the same).",
    "413": "The request body is larger than this server accepts.",
    "429": "Too many requests for this API key; wait the seconds in Retry-After.",
}
RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before retrying."}}


def schema_finish(result: dict, generator, request, public) -> dict:
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    gets = {path: operations["get"]["operationId"] for path, operations in result.get("paths", {}).items()
            if "get" in operations}
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if method == "get" and _is_collection_of(path, gets):
                operation["operationId"] = operation["operationId"].removesuffix("_retrieve") + "_list"
            if path.startswith("/v1/"):
                _errors_add(path, method, operation)
    return result


def _is_collection_of(path: str, gets: dict) -> bool:
    """``/v1/files`` when ``/v1/files/{file_id}`` is also a GET with the same operationId."""
    return any(other.startswith(path + "/{") and other.count("/") == path.count("/") + 1
               and operation_id == gets[path] for other, operation_id in gets.items())


def _errors_add(path: str, method: str, operation: dict) -> None:
    codes = ["401", "429"]
    if operation.get("parameters") or operation.get("requestBody"):
        codes.append("400")
    if "{" in path:
        codes.append("404")
    if operation.get("requestBody"):
        codes.append("413")
    responses = operation.setdefault("responses", {})
    for code in sorted(codes):
        if code in responses:
            continue
        responses[code] = {"description": ERRORS[code],
                           "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        if code == "429":
            responses[code]["headers"] = RETRY_AFTER
