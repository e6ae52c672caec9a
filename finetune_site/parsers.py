"""The API's JSON parser: DRF's, refusing what would only fail later (400, never a 500).

A body nested deeper than Python's recursion limit made ``json.load`` raise RecursionError; one a
little less deep passed, then broke whatever walked it. A string holding NUL (``"\\u0000"``) cannot
be stored in PostgreSQL's text or jsonb. Both are refused at parse time, for every field at once.
"""

from rest_framework import parsers
from rest_framework.exceptions import ParseError

from finetune_site.nul_guard import NUL

MAX_DEPTH = 64  # arrays and objects inside one another; the deepest real body (a job's method) has 4


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON parse error - the body is nested more than {MAX_DEPTH} levels deep.") from None
        problem = json_problem(data)
        if problem:
            raise ParseError(f"JSON parse error - {problem}")
        return data


def json_problem(data) -> str:
    """What makes parsed JSON unusable (too deep, a NUL in a key or string), or "" when nothing does."""
    stack = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list) and depth >= MAX_DEPTH:
            return f"the body is nested more than {MAX_DEPTH} levels deep."
        if isinstance(value, dict):
            if any(NUL in key for key in value):
                return "an object key contains a NUL character (\\u0000), which no input may hold."
            stack += [(item, depth + 1) for item in value.values()]
        elif isinstance(value, list):
            stack += [(item, depth + 1) for item in value]
        elif isinstance(value, str) and NUL in value:
            return "a string contains a NUL character (\\u0000), which no input may hold."
    return ""
