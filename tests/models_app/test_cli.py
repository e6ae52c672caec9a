"""`manage.py finetune`: upload, submit and follow a job with the real worker."""

import io

import pytest
from django.core.management import CommandError, call_command

from jobs_app.models import FineTuneJob
from models_app.management.commands.finetune import Command, queued_hint
from tests.factories import make_job
from workers.sample_data import classification_write

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.e2e
def test_cli_trains_and_prints_where_the_adapter_is(live_base_model, worker, tmp_path):
    out = io.StringIO()
    call_command("finetune", str(classification_write(tmp_path / "t.jsonl", 16)), "--model", "tiny-llama",
                 "--n-epochs", "1", "--user", "dave", stdout=out)
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


@pytest.mark.e2e
def test_cli_with_validation_prints_base_and_tuned_side_by_side(live_base_model, worker, tmp_path):
    out = io.StringIO()
    call_command("finetune", str(classification_write(tmp_path / "t.jsonl", 16)), "--model", "tiny-llama",
                 "--validation", str(classification_write(tmp_path / "v.jsonl", 8, seed=1)), "--n-epochs", "1",
                 "--gate", "eval_loss:0", "--user", "erin", stdout=out)
    text = out.getvalue()
    assert "| metric | base | tuned |" in text and "| eval_loss | " in text and "| accuracy | " in text
    assert "Promotion gate: eval_loss" in text
    job = FineTuneJob.objects.get(owner__username="erin")
    assert job.validation_dataset.filename == "v.jsonl"
    assert job.promotion_gate == {"metric": "eval_loss", "min_improvement": 0.0, "alias": "production"}


def test_cli_gate_needs_a_number_and_a_validation_file(live_base_model, tmp_path):
    train = str(classification_write(tmp_path / "t.jsonl", 4))
    with pytest.raises(CommandError, match="--gate eval_loss:lots: write METRIC:MIN_IMPROVEMENT"):
        call_command("finetune", train, "--gate", "eval_loss:lots", stdout=io.StringIO())
    with pytest.raises(CommandError, match="promotion_gate: a promotion gate compares base and tuned"):
        call_command("finetune", train, "--gate", "eval_loss:0.05", stdout=io.StringIO())
    assert not FineTuneJob.objects.exists()


def test_cli_takes_a_reinforcement_grader_and_names_its_bad_field_as_a_flag(live_base_model, tmp_path):
    import json

    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"2 + {i}?"}], "answer": str(2 + i)})
                            + "\n" for i in range(4)))
    grader = {"type": "string_check", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
              "operation": "contains"}
    with pytest.raises(CommandError, match=r"--grader \(operation\): .*must be one of eq, ne, like, ilike"):
        call_command("finetune", str(path), "--objective", "reinforcement", "--grader", json.dumps(grader),
                     stdout=io.StringIO())
    (tmp_path / "grader.json").write_text(json.dumps({**grader, "operation": "eq"}))
    with pytest.raises(CommandError, match="--num-generations: num_generations must be from 2 to 64"):
        call_command("finetune", str(path), "--objective", "reinforcement", "--grader", f"@{tmp_path}/grader.json",
                     "--num-generations", "1", stdout=io.StringIO())
    assert not FineTuneJob.objects.exists()


def test_cli_runs_repeat_with_seed_42_unless_another_is_given(live_base_model, tmp_path, monkeypatch):
    """The README's numbers come from the CLI: its job must not get the API's random seed."""
    monkeypatch.setattr("models_app.management.commands.finetune._follow", lambda job, out: job)
    monkeypatch.setattr(Command, "_report", lambda self, job: None)
    train = str(classification_write(tmp_path / "t.jsonl", 4))
    call_command("finetune", train, stdout=io.StringIO())
    call_command("finetune", train, "--seed", "7", stdout=io.StringIO())
    assert list(FineTuneJob.objects.order_by("created_at").values_list("seed", flat=True)) == [42, 7]


def test_a_queued_job_behind_others_says_so_instead_of_asking_for_a_worker(base_model):
    running = make_job(status="running")
    mine = make_job(running.owner, status="queued")
    assert queued_hint(mine).startswith("Still queued behind 1 running and 0 waiting job(s)")
    FineTuneJob.objects.filter(pk=running.pk).update(status="succeeded")
    assert "is a worker running?" in queued_hint(mine)
