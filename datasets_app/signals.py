"""What datasets tell the apps above them, without knowing them (those apps connect in ``ready()``)."""

from django.dispatch import Signal

# A dataset has its verdict (ready or invalid), sent after the commit that stored it: kwarg
# ``dataset_id``. Jobs waiting for its check go on or fail.
dataset_checked = Signal()

# A dataset has its verdict (ready or invalid), sent inside the transaction that stores it, so a
# receiver's writes commit or roll back with the verdict: kwarg ``dataset``.
dataset_verdict = Signal()
