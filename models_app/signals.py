"""What the registry tells the apps above it, without knowing them (those apps connect in ``ready()``).

Both are sent inside the transaction that stores the change, so a receiver's writes commit or roll
back with it.
"""

from django.dispatch import Signal

# An alias of a model name now points at another version (promote, the promotion gate or a
# rollback): kwargs ``alias`` (the ModelAlias row), ``previous`` (the version it pointed at, or
# None) and ``action`` ("promote", "gate" or "rollback").
model_promoted = Signal()

# An evaluation ended (succeeded or failed): kwarg ``evaluation``.
evaluation_finished = Signal()

# An export ended (verified or failed): kwarg ``export``.
export_finished = Signal()
