"""`manage.py finetune`: upload, submit and follow a job with the real worker."""

import io

import pytest
from django.core.management import CommandError, call_command

from jobs_app.management.commands.finetune import Command
from jobs_app.models import FineTuneJob
from tests.factories import make_job
from workers.sample_data import classification_write

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.e2e
def test_cli_trains_and_prints_where_the_adapter_is(live_base_model, worker, tmp_path):
    out = io.StringIO()
    call_command("finetune", str(classification_write(tmp_path / "t.jsonl", 16)), "--model", "tiny-llama",
                 "--epochs", "1", "--user", "dave", stdout=out)
    text = out.getvalue()
    job = FineTuneJob.objects.get(owner__username="dave")
    assert job.status == "succeeded"
    assert f"{job.id} succeeded: model {job.result_model.id}" in text
    assert "Adapter: " in text and text.split("Adapter: ")[1].split()[0].endswith("adapter.zip")


def test_cli_rejects_bad_file_with_line_number(live_base_model, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"messages": []}\n')
    with pytest.raises(CommandError, match="bad.jsonl, line 1, messages"):
        call_command("finetune", str(path), "--model", "tiny-llama", stdout=io.StringIO())
    assert not FineTuneJob.objects.exists()


def test_cli_unknown_model_is_an_error(live_base_model, tmp_path):
    with pytest.raises(CommandError, match="unknown base model 'nope'"):
        call_command("finetune", str(classification_write(tmp_path / "t.jsonl", 4)), "--model", "nope",
                     stdout=io.StringIO())


def test_ctrl_c_then_yes_cancels_the_job(live_base_model, monkeypatch):
    job = make_job(status=FineTuneJob.Status.RUNNING)
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    command = Command(stdout=io.StringIO())
    command._interrupted(job)
    job.refresh_from_db()
    assert job.status == FineTuneJob.Status.CANCELLED
