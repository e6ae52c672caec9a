"""The one way a status changes: lock the row, check the model's rule table, save.

Each model with a status keeps its table of legal changes next to it (``ALLOWED_TRANSITIONS``,
``DATASET_TRANSITIONS``, ...) and one service function per app calls ``status_transition``;
nothing else assigns the field.
"""

from django.db import models, transaction

from finetune_site.errors import Conflict


def status_transition(model: type[models.Model], pk, to: str, *, rules: dict[str, set[str]],
                      field: str = "status", check=None, **fields) -> models.Model:
    """Move row ``pk`` of ``model`` to ``to`` if ``rules`` allow it from its current status.

    ``check(row)``, when given, may raise to refuse (e.g. a stale attempt); ``fields`` are saved
    with the status. Raises ``Conflict`` (invalid_transition) and ``model.DoesNotExist``.
    """
    with transaction.atomic():
        row = model.objects.select_for_update().get(pk=pk)
        current = getattr(row, field)
        if to not in rules[current]:
            raise Conflict(f"{model._meta.verbose_name} {pk} is {current or 'not started'} and cannot become {to}",
                           code="invalid_transition")
        if check is not None:
            check(row)
        setattr(row, field, to)
        for name, value in fields.items():
            setattr(row, name, value)
        row.save(update_fields=[field, *fields])
    return row


def status_allows(rules: dict[str, set[str]], current: str, to: str) -> bool:
    """Whether ``rules`` let a row in ``current`` become ``to``: what pages offer comes from here."""
    return to in rules.get(current, set())
