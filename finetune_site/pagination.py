"""OpenAI-style cursor pages: ?after=<id>&limit=N&order=desc|asc → {object, data, has_more, first_id, last_id}."""

from collections.abc import Callable

from django.db.models import Q, QuerySet

from finetune_site.errors import InvalidRequest

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
ORDERS = ("desc", "asc")


def cursor_page(request, queryset: QuerySet, render: Callable, *,
                order: tuple[str, ...] = ("created_at", "id")) -> dict:
    """Newest first by ``order`` (oldest first with ``?order=asc``). ``after`` is the id of the last object
    of the previous page."""
    limit = _limit(request.query_params.get("limit"))
    ascending = _ascending(request.query_params.get("order"))
    after = request.query_params.get("after")
    rows = queryset.order_by(*(field if ascending else f"-{field}" for field in order))
    if after:
        anchor = queryset.filter(pk=after).values(*order).first()
        if anchor is None:
            raise InvalidRequest(f"after: no such object {after!r}", param="after")
        rows = rows.filter(_beyond(anchor, order, "gt" if ascending else "lt"))
    items = list(rows[: limit + 1])
    data = [render(item) for item in items[:limit]]
    return {
        "object": "list",
        "data": data,
        "has_more": len(items) > limit,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be an integer from 1 to {MAX_LIMIT}", param="limit")
    return int(raw)


def _ascending(raw: str | None) -> bool:
    if raw is not None and raw not in ORDERS:
        raise InvalidRequest("order must be desc (newest first, the default) or asc", param="order")
    return raw == "asc"


def _beyond(anchor: dict, order: tuple[str, ...], lookup: str) -> Q:
    """Rows that sort after ``anchor`` in ``order`` (a keyset condition; ``lookup``: lt descending, gt
    ascending)."""
    condition = Q()
    for index, field in enumerate(order):
        equal = {name: anchor[name] for name in order[:index]}
        condition |= Q(**equal, **{f"{field}__{lookup}": anchor[field]})
    return condition
