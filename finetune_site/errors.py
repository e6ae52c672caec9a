"""Errors services raise; the API turns them into OpenAI-shaped error bodies."""


class InvalidRequest(Exception):
    """The caller asked for something that cannot be done; ``param`` names the input."""

    status = 400

    def __init__(self, message: str, *, param: str | None = None, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class Conflict(InvalidRequest):
    """The request is well formed but the object's state forbids it."""

    status = 409


class NotFound(InvalidRequest):
    """The object does not exist or belongs to someone else (the two look the same)."""

    status = 404


class Unavailable(InvalidRequest):
    """The request is fine but no process that can serve it answered in time; retry later."""

    status = 503


class ServerError(InvalidRequest):
    """The request is fine but carrying it out failed on our side (a model that does not load)."""

    status = 500


class Forbidden(InvalidRequest):
    """The object exists for the caller but their role does not allow this (a project's viewer writing)."""

    status = 403
