"""RLAIF's judged pairs: stored as a new version of the job's prompts, with lineage to the prompts,
the policy that sampled the answers and the judge that ranked them."""

from pathlib import Path

from django.db import transaction

from datasets_app.services import dataset_version_add
from datasets_app.services.files import files_delete
from finetune_site.errors import Conflict
from jobs_app.models import FineTuneJob
from jobs_app.services.lifecycle import job_event_add
from workers.graders import judge_names


def job_preferences_store(*, job: FineTuneJob, path: Path, ranking: dict) -> None:
    """The preference pairs an RLAIF job sampled and judged (``workers.rlaif``) become a version of its
    prompts (visible and downloadable as any file), named on the job as ``preference_dataset``. Fenced by
    the attempt: a superseded attempt stores nothing."""
    operation = {"op": "rlaif", "job": job.id, "policy": job.base_model.name, "grader": job.grader,
                 "judges": sorted(judge_names(job.grader)),
                 "num_generations": job.hyperparameters.get("num_generations"),
                 "temperature": job.hyperparameters.get("temperature"), **ranking}
    stored = []
    try:
        with transaction.atomic():
            stored.append(dataset_version_add(parent=job.dataset, local=path, operations=[operation]))
            version = stored[0]
            FineTuneJob.objects.filter(pk=job.pk).update(preference_dataset=version)
            job_event_add(job_id=job.id, expect_attempt=job.attempt, data={"preference_file": version.id},
                          message=f"Stored {version.row_count} preference pairs judged from "
                                  f"{ranking.get('prompts', '?')} prompts as {version.id} ({version.filename}); "
                                  "DPO trains on them")
    except Conflict:  # another attempt owns the job: this one leaves nothing behind
        for version in stored:
            files_delete(version)
        raise
