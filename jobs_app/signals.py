"""What jobs tell the apps above them, without knowing them (those apps connect in ``ready()``)."""

from django.dispatch import Signal

# A job's training finished and it is marked succeeded (sent inside that transaction): kwargs
# ``job`` and ``output_dir``, the local directory of the adapter or full model it produced.
job_succeeded = Signal()

# A job's status changed (every change, sent inside the transaction that stores it, so a receiver's
# writes commit or roll back with it): kwargs ``job`` (the saved row) and ``previous`` (its status before).
job_transitioned = Signal()

# A validation pass of a running job was recorded (sent by the worker as it stores the pass's metric
# event, outside any transaction): kwargs ``job_id``, ``attempt``, ``step``, ``total_steps`` and
# ``valid_loss``. A receiver may cancel the job (a sweep pruning a trial); training stops at its next step.
job_validated = Signal()
