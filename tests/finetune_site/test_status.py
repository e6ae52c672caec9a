"""Every status has one writer and a rule table next to its model."""

import ast
from pathlib import Path

import pytest

from datasets_app.models import (
    DATASET_TRANSITIONS,
    QUALITY_TRANSITIONS,
    TOKEN_STATS_TRANSITIONS,
    UPLOAD_TRANSITIONS,
    Dataset,
    DatasetUpload,
    TokenStats,
)
from finetune_site.errors import Conflict
from finetune_site.status import status_transition
from jobs_app.models import ALLOWED_TRANSITIONS, FineTuneJob
from models_app.models import EVALUATION_TRANSITIONS, EXPORT_TRANSITIONS, Evaluation, Export
from tests.factories import make_dataset, make_job

ROOT = Path(__file__).resolve().parent.parent.parent
TABLES = [
    (FineTuneJob.Status, ALLOWED_TRANSITIONS), (Dataset.Status, DATASET_TRANSITIONS),
    (Dataset.QualityStatus, QUALITY_TRANSITIONS), (DatasetUpload.Status, UPLOAD_TRANSITIONS),
    (TokenStats.Status, TOKEN_STATS_TRANSITIONS), (Export.Status, EXPORT_TRANSITIONS),
    (Evaluation.Status, EVALUATION_TRANSITIONS),
]


@pytest.mark.parametrize(("choices", "table"), TABLES, ids=lambda value: getattr(value, "__qualname__", ""))
def test_every_status_has_a_row_in_its_table(choices, table):
    assert set(table) == set(choices.values)
    assert all(set(targets) <= set(choices.values) for targets in table.values())


def test_no_code_sets_a_status_by_a_bulk_update():
    """A queryset ``update(status=...)`` would skip the table and the broadcast: only the writers move it."""
    found = []
    for package in ("accounts_app", "datasets_app", "jobs_app", "models_app", "finetune_site"):
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "update" and any(
                        k.arg in ("status", "quality_status") for k in node.keywords):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == []


def test_a_move_outside_the_table_is_refused_and_changes_nothing(base_model):
    dataset = make_dataset()
    with pytest.raises(Conflict, match="is ready and cannot become validating"):
        status_transition(Dataset, dataset.id, Dataset.Status.VALIDATING, rules=DATASET_TRANSITIONS, progress=0.5)
    dataset.refresh_from_db()
    assert dataset.status == Dataset.Status.READY and dataset.progress == 1.0


def test_a_finished_export_is_never_taken_again(base_model):
    from models_app.models import FineTunedModel
    from models_app.services import export_run

    job = make_job(status="succeeded")
    model = FineTunedModel.objects.create(id="ft:x:y:z", owner=job.owner, job=job,
                                          project_id=job.project_id, base_model=base_model, name="x",
                                          adapter="lora", adapter_path="models/x/adapter")
    export = Export.objects.create(id="export-done", model=model, kind="merged", status=Export.Status.VERIFIED)
    assert export_run(export_id=export.id) is None  # a redelivered task finds it verified and leaves it
    assert Export.objects.get(pk=export.id).status == Export.Status.VERIFIED
