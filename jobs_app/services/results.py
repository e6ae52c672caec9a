"""A succeeded job's result file: its step metrics as CSV, in OpenAI's columns."""

import csv
import io

from datasets_app.models import Dataset
from datasets_app.services import result_file_create
from jobs_app.models import FineTuneJob, JobEvent

# OpenAI's columns first (as its result files have them), then ours.
RESULT_COLUMNS = ("step", "train_loss", "valid_loss", "train_mean_token_accuracy", "valid_mean_token_accuracy",
                  "full_valid_loss", "full_valid_mean_token_accuracy", "learning_rate", "tokens", "reward")


def job_result_file_create(job: FineTuneJob) -> Dataset:
    """Write the job's step metrics (one row per step: the training and validation values logged at it) as
    a file of the job's project; the job's ``result_files`` lists it."""
    rows: dict[int, dict] = {}
    for data in job.events.filter(type=JobEvent.Type.METRICS).order_by("seq").values_list("data", flat=True):
        if isinstance(data, dict) and "step" in data:
            rows.setdefault(data["step"], {}).update(data)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=RESULT_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows[step] for step in sorted(rows))
    # the job's own record: in its project whoever belongs to it now
    return result_file_create(owner=job.owner, project=job.project, filename=f"step_metrics_{job.id}.csv",
                              content=text.getvalue().encode(), rows=len(rows))
