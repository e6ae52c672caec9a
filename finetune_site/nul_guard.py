"""Refuses a request that carries a NUL character (U+0000) in its path, query, cookies or form fields.

PostgreSQL's text and jsonb cannot hold NUL, and psycopg raises on a query that contains one, so an
id, a query parameter or a form field with ``%00`` would be a 500 wherever it is looked up or stored.
No legitimate input has one: it is refused once, here, before any view runs (400; OpenAI's shape
under /v1). JSON bodies are checked by the API's parser (``finetune_site/parsers.py``), file contents
by validation.
"""

from django.core.exceptions import BadRequest

NUL = "\x00"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def has_nul(values) -> bool:
    """True when any of the strings has a NUL character."""
    return any(NUL in value for value in values)


def _query_dict_strings(query_dict) -> list[str]:
    return [text for key, values in query_dict.lists() for text in (key, *values)]


def request_nul_part(request) -> str | None:
    """The part of the request that holds a NUL ("path", "query", ...), or None when none does."""
    if NUL in request.path_info:
        return "path"
    if has_nul(_query_dict_strings(request.GET)):
        return "query"
    if has_nul([*request.COOKIES, *request.COOKIES.values()]):
        return "cookies"
    if request.method == "POST" and request.content_type in FORM_TYPES and \
            has_nul(_query_dict_strings(request.POST)):  # form fields only: files are validated later
        return "form"
    return None


class NulCharacterRefusal:
    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        part = request_nul_part(request)
        if part is not None:
            raise BadRequest(f"The request's {part} contains a NUL character (%00), which no input may hold.")
        return self.get_response(request)


def nul_replaced(value):
    """``value`` (JSON: dicts, lists, strings, numbers) with each NUL in its strings replaced by U+FFFD, so
    PostgreSQL can store it. For what a model wrote, not what a caller sent (that is refused): a byte-level
    tokenizer has a token for the byte 0, and an untrained model picks it."""
    if isinstance(value, str):
        return value.replace(NUL, "\ufffd") if NUL in value else value
    if isinstance(value, dict):
        return {nul_replaced(key): nul_replaced(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [nul_replaced(item) for item in value]
    return value
