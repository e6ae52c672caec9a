"""Dataset services: inline and queued validation, hostile files, re-validation, jobs that wait."""

import gzip
import io
import json
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.conf import settings as django_settings

from datasets_app import services
from datasets_app.models import Dataset
from datasets_app.selectors import dataset_rows
from finetune_site.errors import Conflict, InvalidRequest
from jobs_app.models import FineTuneJob
from jobs_app.services import job_validate
from tests.factories import jsonl_bytes, make_dataset, make_job, make_upload, make_user
from workers.sample_data import classification_rows

pytestmark = pytest.mark.django_db
CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


@pytest.fixture
def queued(settings):
    """Every upload goes to the worker's check instead of being checked inline."""
    settings.DATASET_INLINE_BYTES = 0
    return settings


def _stored() -> dict[str, bytes]:
    root = Path(django_settings.MEDIA_ROOT)
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()} if root.exists() else {}


def _zip(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


def test_small_csv_with_column_map_is_ready_at_once_with_normalised_rows():
    content = b"question,answer\nWhat is 2+2?,4\nCapital of France?,Paris\n"
    dataset = services.dataset_upload(owner=make_user(), upload=make_upload(content, "qa.csv"),
                                      options={"column_map": {"question": "prompt", "answer": "completion"}})
    assert (dataset.status, dataset.format, dataset.container, dataset.row_count) == (
        "ready", "prompt_completion", "csv", 2)
    assert dataset.file.read() == content  # the original is kept as uploaded
    assert dataset_rows(dataset) == [{"prompt": "What is 2+2?", "completion": "4"},
                                     {"prompt": "Capital of France?", "completion": "Paris"}]
    assert dataset.training_file_name.endswith("normalised/train.jsonl")


def test_alpaca_upload_trains_as_chat():
    rows = [{"instruction": "Say hi", "input": "", "output": "hi"}]
    dataset = make_dataset(rows=rows)
    assert (dataset.format, dataset.training_format) == ("alpaca", "chat")
    assert dataset_rows(dataset)[0]["messages"][1] == {"role": "assistant", "content": "hi"}


def test_large_upload_is_stored_then_checked_by_the_task(queued, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        dataset = make_dataset()
    assert dataset.status == "uploaded" and len(callbacks) == 1  # the task is queued after commit
    dataset = services.dataset_validate(dataset_id=dataset.id)
    assert (dataset.status, dataset.row_count, dataset.format, dataset.progress) == ("ready", 16, "chat", 1.0)
    assert dataset.validation_report["ok"] and dataset.validated_at is not None
    assert services.dataset_validate(dataset_id=dataset.id) is None  # a second delivery does nothing


def test_bad_file_checked_by_the_task_becomes_invalid_with_report(queued):
    content = jsonl_bytes([CHAT, CHAT]) + b"{oops\n" + jsonl_bytes([{"messages": [{"role": "user", "content": "x"}]}])
    dataset = services.dataset_upload(owner=make_user(), upload=make_upload(content))
    dataset = services.dataset_validate(dataset_id=dataset.id)
    report = dataset.validation_report
    assert dataset.status == "invalid" and not dataset.training_file
    assert {e["kind"]: e["examples"][0]["line"] for e in report["errors"]} == {"invalid_json": 3,
                                                                               "no_assistant_turn": 4}
    assert all(e["fix"] for e in report["errors"])
    assert "train.jsonl, line 3: invalid JSON" in report["summary"]
    assert dataset.file.read() == content  # kept, so the user can look at it



HOSTILE = {
    "zip_slip": ("evil.zip", lambda: _zip("../../outside.jsonl", jsonl_bytes([CHAT])), "unsafe path"),
    "zip_bomb": ("bomb.zip", lambda: _zip("t.jsonl", b" " * (40 << 20)), "zip bomb"),
    "gzip_bomb": ("bomb.jsonl.gz", lambda: gzip.compress(jsonl_bytes([CHAT]) + b"\n" * (40 << 20)), "zip bomb"),
    "deep_nesting": ("deep.jsonl", lambda: ('{"a": ' * 50_000 + "1" + "}" * 50_000 + "\n").encode(),
                     "nests objects or lists more than 32 levels"),
    "huge_line": ("huge.jsonl", lambda: jsonl_bytes([CHAT]) + b'{"text": "' + b"x" * (3 << 20) + b'"}\n',
                  "line 2: the line is longer than 1 MiB"),
    "invalid_utf8": ("bad.jsonl", lambda: jsonl_bytes([CHAT, CHAT]) + b'{"text": "\xff"}\n',
                     "line 3: not valid UTF-8"),
    "csv_huge_field": ("big.csv", lambda: b'text\n"' + b"word\n" * (600_000) + b'"\n', "field larger than"),
    "truncated_parquet": ("cut.parquet", lambda: _parquet()[:-40], "not a complete Parquet file"),
    "wrong_extension": ("train.parquet", lambda: jsonl_bytes([CHAT]), "content looks like JSONL"),
    "blank_file": ("blank.jsonl", lambda: b"\n\n   \n", "the file is empty"),
}


def _parquet() -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table({"text": ["a"] * 1000}), sink)
    return sink.getvalue()


@pytest.mark.parametrize("case", list(HOSTILE))
@pytest.mark.parametrize("inline", [True, False], ids=["inline", "queued"])
def test_hostile_file_is_refused_or_invalid_and_nothing_else_is_touched(settings, case, inline):
    settings.DATASET_INLINE_BYTES = 1 << 30 if inline else 0
    settings.DATASET_MAX_LINE_BYTES = 1 << 20
    settings.DATASET_MAX_FIELD_BYTES = 1 << 20
    name, make, expected = HOSTILE[case]
    owner = make_user()
    kept = make_dataset(owner)
    Dataset.objects.filter(pk=kept.pk).update(status="ready")
    before = _stored()
    if inline:
        with pytest.raises(InvalidRequest) as error:
            services.dataset_upload(owner=owner, upload=make_upload(make(), name))
        assert expected in error.value.message and error.value.param == "file"
        assert list(Dataset.objects.all()) == [kept] and _stored() == before
        return
    dataset = services.dataset_upload(owner=owner, upload=make_upload(make(), name))
    dataset = services.dataset_validate(dataset_id=dataset.id)
    assert dataset.status == "invalid" and not dataset.training_file, dataset.validation_report
    assert expected in dataset.validation_report["summary"]
    after = _stored()
    assert {k: v for k, v in after.items() if k in before} == before  # what was stored is untouched
    assert set(after) - set(before) == {str(Path(dataset.file.path))}  # only the upload itself was added
    assert not (Path(django_settings.MEDIA_ROOT).parent / "outside.jsonl").exists()


def test_empty_and_unsupported_files_are_400_before_storing():
    owner = make_user()
    with pytest.raises(InvalidRequest, match="the file is empty"):
        services.dataset_upload(owner=owner, upload=make_upload(b"", "t.jsonl"))
    with pytest.raises(InvalidRequest, match="not a training file type"):
        services.dataset_upload(owner=owner, upload=make_upload(b"x", "t.exe"))
    assert not Dataset.objects.exists()


def test_crashed_check_leaves_the_dataset_invalid_with_a_report(queued):
    dataset = make_dataset()
    services.dataset_fail(dataset_id=dataset.id, message="MemoryError: boom")
    dataset.refresh_from_db()
    assert dataset.status == "invalid"
    assert dataset.validation_report["errors"][0]["kind"] == "internal_error"
    assert "boom" in dataset.validation_report["summary"]


def test_invalid_dataset_is_checked_again_with_a_column_map(queued):
    content = b"question,answer\nWhat?,That.\n"
    dataset = services.dataset_upload(owner=make_user(), upload=make_upload(content, "qa.csv"))
    dataset = services.dataset_validate(dataset_id=dataset.id)
    assert dataset.status == "invalid"
    assert "map your columns" in dataset.validation_report["summary"]
    dataset = services.dataset_revalidate(dataset=dataset, options=services.dataset_options_clean(
        column_map="question→prompt, answer->completion"))
    assert dataset.status == "uploaded"
    dataset = services.dataset_validate(dataset_id=dataset.id)
    assert dataset.status == "ready" and dataset.format == "prompt_completion"
    with pytest.raises(Conflict):
        services.dataset_revalidate(dataset=dataset, options={})


@pytest.mark.parametrize(("raw", "expected"), [
    ("question→prompt, answer:completion", {"question": "prompt", "answer": "completion"}),
    ('{"q": "prompt"}', {"q": "prompt"}),
    ({"q": "prompt"}, {"q": "prompt"}),
    ("q=prompt\na -> completion", {"q": "prompt", "a": "completion"}),
])
def test_column_map_forms(raw, expected):
    assert services.column_map_parse(raw) == expected


@pytest.mark.parametrize("raw", ["nonsense", '{"q": 1}', "{bad json", ["q", "prompt"]])
def test_bad_column_map_is_400(raw):
    with pytest.raises(InvalidRequest) as error:
        services.column_map_parse(raw)
    assert error.value.param == "column_map"


def test_same_content_twice_is_recognised():
    owner = make_user()
    first = make_dataset(owner)
    second = make_dataset(owner)
    assert second.duplicate_of == first and first.duplicate_of is None
    assert make_dataset(make_user()).duplicate_of is None  # another user's bytes are not yours


# --- jobs and datasets ----------------------------------------------------------------------------

def test_job_waits_for_a_file_being_checked_then_is_queued(base_model, queued, django_capture_on_commit_callbacks):
    dataset = make_dataset()
    job = make_job(dataset.owner, dataset=dataset)
    job_validate(job_id=job.id)
    job.refresh_from_db()
    assert job.status == "validating_files"
    assert job.events.filter(message__startswith="Waiting for train.jsonl").exists()
    with django_capture_on_commit_callbacks() as callbacks:
        services.dataset_validate(dataset_id=dataset.id)
    assert any(getattr(c, "__name__", "") == "<lambda>" for c in callbacks)
    job_validate(job_id=job.id)  # what the re-check queues
    job.refresh_from_db()
    assert job.status == "queued"


def test_job_fails_clearly_when_its_file_turns_out_invalid(base_model, queued):
    dataset = services.dataset_upload(owner=make_user(), upload=make_upload(b'{"messages": []}\n'))
    job = make_job(dataset.owner, dataset=dataset)
    services.dataset_validate(dataset_id=dataset.id)
    job_validate(job_id=job.id)
    job.refresh_from_db()
    assert job.status == "failed" and job.error["code"] == "invalid_training_file"
    assert "line 1, messages: must be a non-empty list" in job.error["message"]


def test_job_on_an_invalid_file_is_refused_at_once(base_model, queued):
    from jobs_app.services import job_create

    dataset = services.dataset_upload(owner=make_user(), upload=make_upload(b'{"messages": []}\n'))
    services.dataset_validate(dataset_id=dataset.id)
    with pytest.raises(InvalidRequest, match="failed validation") as error:
        job_create(owner=dataset.owner, training_file=dataset.id, model="tiny-llama")
    assert error.value.param == "training_file" and not FineTuneJob.objects.exists()


def test_preference_pairs_are_not_trained_by_supervised_jobs(base_model):
    from finetune_site.errors import InvalidRequest

    dataset = make_dataset(rows=[{"prompt": "q", "chosen": "a", "rejected": "b"}])
    with pytest.raises(InvalidRequest, match="preference rows") as refused:  # known at creation: a 400
        make_job(dataset.owner, dataset=dataset)
    assert refused.value.param == "training_file"
    # a file whose check ends after the job was created is refused when the job is validated
    job = make_job(dataset.owner, dataset=make_dataset(dataset.owner))
    job.dataset.__class__.objects.filter(pk=job.dataset_id).update(format="preference")
    job_validate(job_id=job.id)
    job.refresh_from_db()
    assert job.status == "failed" and "preference rows" in job.error["message"]


def test_training_config_reads_the_normalised_file(base_model, tmp_path):
    from jobs_app.services import train_config

    content = b"question,answer\n" + b"".join(f"q{i},a{i}\n".encode() for i in range(8))
    dataset = services.dataset_upload(owner=make_user(), upload=make_upload(content, "qa.csv"),
                                      options={"column_map": "question→prompt,answer→completion"})
    job = make_job(dataset.owner, dataset=dataset)
    config = train_config(job, tmp_path)
    first = json.loads(Path(config.train_file).read_text().splitlines()[0])
    assert first == {"prompt": "q0", "completion": "a0"}


def test_classification_rows_stay_ready_inline():
    dataset = make_dataset(rows=classification_rows(8, chat=False))
    assert dataset.status == "ready" and dataset.format == "prompt_completion" and not dataset.training_file


def test_job_with_validation_rows_from_training_warns(base_model):
    from jobs_app.models import JobEvent

    user = make_user()
    train = make_dataset(user, rows=classification_rows(16))
    validation = make_dataset(user, rows=classification_rows(16)[:2] + classification_rows(4, seed=9)[2:])
    job = make_job(user, dataset=train)
    FineTuneJob.objects.filter(pk=job.pk).update(validation_dataset=validation)
    job_validate(job_id=job.id)
    job.refresh_from_db()
    warning = job.events.get(level=JobEvent.Level.WARN).message
    assert job.status == "queued"
    assert warning.startswith("2 of 4 validation rows also appear in the training file (2 whole")
    assert "validation row 1 = training row 1" in warning


def test_progress_is_written_while_validating(queued):
    from datasets_app.services.validation import _ProgressWriter
    from workers.events import ValidationProgress

    dataset = make_dataset()
    Dataset.objects.filter(pk=dataset.pk).update(status="validating")
    writer = _ProgressWriter(dataset.id)
    writer(ValidationProgress(500, 1000, 10))
    assert Dataset.objects.get(pk=dataset.pk).progress == 0.5
    writer(ValidationProgress(502, 1000, 11))  # under 1% more: not written again
    assert Dataset.objects.get(pk=dataset.pk).progress == 0.5
