"""One id per request, carried everywhere the request leads: its log lines, the response's
``X-Request-ID``, the Celery tasks it queues (a message header, restored in the worker) and the job
events written on its behalf, so that one id finds a request's whole path.

The id is the client's ``X-Request-ID`` when that is a sane token (a proxy in front may set it),
else a new uuid4 hex.
"""

import contextvars
import logging
import re
import uuid

from celery.signals import before_task_publish, task_postrun, task_prerun

HEADER = "X-Request-ID"
TASK_HEADER = "request_id"  # the Celery message header; a task's ``self.request.request_id``
# Letters, digits and a few separators, as proxies and tracing systems make them; anything else
# (spaces, quotes, newlines: log injection) is replaced by an id of our own.
SANE = re.compile(r"[A-Za-z0-9._:-]{1,64}")

_current: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


def request_id_get() -> str:
    """The id of the request (or task) this code runs for; "" outside of one."""
    return _current.get()


def request_id_set(value: str) -> contextvars.Token:
    return _current.set(value)


def request_id_reset(token: contextvars.Token) -> None:
    _current.reset(token)


def request_id_from(header: str | None) -> str:
    """The client's id when it is a sane token, else a new one."""
    if header and SANE.fullmatch(header):
        return header
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Sets the request's id for everything it runs and returns it in ``X-Request-ID``.

    Sync only: under ASGI Django runs it in the request's thread, with the view, so the view and
    what it logs or queues see the same id.
    """

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        request.request_id = request_id_from(request.headers.get(HEADER))
        token = request_id_set(request.request_id)
        try:
            response = self.get_response(request)
        finally:
            request_id_reset(token)
        response[HEADER] = request.request_id
        return response


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record (empty outside a request or task), for the formatters."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", ""):
            record.request_id = request_id_get()
        return True


@before_task_publish.connect
def _request_id_send(headers: dict | None = None, **kwargs) -> None:
    """A task queued while serving a request carries the request's id in its message headers."""
    current = request_id_get()
    if current and headers is not None and not headers.get(TASK_HEADER):
        headers[TASK_HEADER] = current


_task_tokens: dict[str, contextvars.Token] = {}


@task_prerun.connect
def _request_id_restore(task_id: str = "", task=None, **kwargs) -> None:
    """In the worker: the task runs under the id of the request that queued it (a new one when none did)."""
    # A worker puts the message's own headers on the request; task.apply() keeps them in request.headers.
    incoming = None
    if task is not None:
        incoming = getattr(task.request, TASK_HEADER, None) or (task.request.headers or {}).get(TASK_HEADER)
    _task_tokens[task_id] = request_id_set(incoming if incoming and SANE.fullmatch(str(incoming))
                                           else uuid.uuid4().hex)


@task_postrun.connect
def _request_id_forget(task_id: str = "", **kwargs) -> None:
    token = _task_tokens.pop(task_id, None)
    if token is not None:
        try:
            request_id_reset(token)
        except ValueError:  # set in another context (a thread pool): nothing of ours to undo here
            request_id_set("")
