"""`python manage.py finetune FILE --model tiny-llama`: upload, submit and follow one job."""

import json
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files import File
from django.core.files.storage import default_storage
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from datasets_app.services import dataset_upload
from finetune_site.errors import InvalidRequest
from finetune_site.files import storage_is_s3
from finetune_site.humane import duration_text
from jobs_app import services
from jobs_app.models import FineTuneJob
from jobs_app.selectors import jobs_ahead_of
from models_app.selectors import evaluation_tables
from workers.hyperparameters import OBJECTIVES, arguments_add, arguments_read

POLL_SECONDS = 0.5
# tqdm's own rate and ETA count steps only; the worker's "left" counts the whole job
TRAINING_BAR = "{l_bar}{bar}| {n_fmt}/{total_fmt} steps [{elapsed}{postfix}]"
EVALUATION_BAR = "{l_bar}{bar}| {n:.0f}% [{elapsed}]"
QUEUE_HINT_SECONDS = 15


class Command(BaseCommand):
    help = "Upload a JSONL file, start a fine-tuning job and follow it until it ends."

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--model", default="tiny-llama", help="base model name (see /v1/models)")
        parser.add_argument("--objective", default="supervised", choices=list(OBJECTIVES),
                            help="what the model learns from: " + "; ".join(f"{k}: {v}" for k, v in OBJECTIVES.items()))
        parser.add_argument("--grader", metavar="JSON|@FILE",
                            help='what scores the samples of --objective reinforcement or rlaif (OpenAI\'s '
                                 'graders), as JSON or @file.json, e.g. \'{"type": "string_check", "input": '
                                 '"{{sample.output_text}}", "reference": "{{item.answer}}", "operation": "eq"}\'')
        parser.add_argument("--suffix", default="", help="a name for the fine-tuned model")
        parser.add_argument("--validation", type=Path,
                            help="a validation file: the tuned model is evaluated against its base on it")
        parser.add_argument("--gate", metavar="METRIC:MIN_IMPROVEMENT",
                            help="promote to production only if METRIC improves on the base by this share, "
                                 "e.g. eval_loss:0.05 (needs --validation)")
        parser.add_argument("--user", default="admin", help="owner of the dataset and job")
        parser.add_argument("--seed", type=int, default=42,
                            help="the run's seed, 42 unless given, so the same command gives the same model "
                                 "(the API draws one when absent, as OpenAI's does)")
        arguments_add(parser)  # --adapter, --n-epochs, --learning-rate, ...: every option of the spec

    def handle(self, *args, file: Path, model, objective, suffix, user, validation, gate, grader, seed,
               **options):
        owner, _ = get_user_model().objects.get_or_create(username=user)
        hyperparameters = arguments_read(options)
        try:
            job = self._submit(file, owner, model, objective, hyperparameters, suffix, validation, _gate(gate),
                               _grader(grader), seed)
        except InvalidRequest as exc:
            raise CommandError(f"{_flag(exc.param, objective)}: {exc.message}") from exc
        self.stdout.write(f"Started {job.id} on {model}; following it (Ctrl-C to stop or cancel).")
        try:
            job = _follow(job, self.stdout)
        except KeyboardInterrupt:
            return self._interrupted(job)
        self._report(job)

    def _submit(self, file: Path, owner, model, objective, hyperparameters, suffix, validation, gate,
                grader, seed: int) -> FineTuneJob:
        dataset = self._upload(file, owner)
        validation_file = self._upload(validation, owner).id if validation else None
        return services.job_create(owner=owner, training_file=dataset.id, model=model, objective=objective,
                                   hyperparameters=hyperparameters, suffix=suffix,
                                   validation_file=validation_file, promotion_gate=gate, grader=grader, seed=seed)

    def _upload(self, file: Path, owner):
        if not file.is_file():
            raise CommandError(f"{file}: no such file")
        with open(file, "rb") as handle:
            dataset = dataset_upload(owner=owner, upload=File(handle, name=file.name))
        if dataset.status == dataset.Status.READY:
            self.stdout.write(f"Uploaded {file} as {dataset.id}: {dataset.row_count} {dataset.format} rows")
        else:  # a large file is checked by a worker; the job waits for the verdict
            self.stdout.write(f"Uploaded {file} as {dataset.id}; a worker is checking it")
        return dataset

    def _interrupted(self, job: FineTuneJob) -> None:
        try:
            answer = input(f"\nCancel {job.id}? [y/N] ").strip().lower()
        except (EOFError, KeyboardInterrupt):
            answer = ""
        if answer in {"y", "yes"}:
            job.refresh_from_db()
            if not job.is_finished:
                services.job_cancel(job=job)
            self.stdout.write(f"Cancelled {job.id}.")
        else:
            self.stdout.write(f"{job.id} keeps running; cancel it with POST /v1/fine_tuning/jobs/{job.id}/cancel")

    def _report(self, job: FineTuneJob) -> None:
        if job.status != FineTuneJob.Status.SUCCEEDED:
            error = job.error or {}
            raise CommandError(f"{job.id} {job.status}: {error.get('message', '')}")
        model = job.result_model
        archive = f"{model.adapter_path}.zip"
        where = default_storage.path(archive) if hasattr(default_storage, "path") and _is_local() else archive
        self.stdout.write(self.style.SUCCESS(f"{job.id} succeeded: model {model.id}"))
        self.stdout.write(f"Adapter: {where}")
        self.stdout.write(f"Download: GET /v1/models/{model.id}/download?artifact=adapter")
        if job.validation_dataset_id:
            self._evaluation_report(model)

    def _evaluation_report(self, model) -> None:
        """Follow the evaluation against the base model (a bar over the rows it scores), then print
        it as a Markdown table."""
        evaluation = model.evaluations.first()
        foreseen = ((model.job.estimate or {}).get("parts") or {}).get("evaluation")
        rows = min(model.job.validation_dataset.row_count, settings.EVAL_MAX_ROWS)
        self.stdout.write(f"Evaluating base and tuned on {rows} validation rows"
                          + (f" (about {duration_text(foreseen)})" if foreseen else "") + " ...")
        with tqdm(total=100, unit="%", dynamic_ncols=True, bar_format=EVALUATION_BAR, file=self.stdout) as bar:
            while evaluation and not evaluation.is_finished:
                time.sleep(POLL_SECONDS)
                evaluation.refresh_from_db()
                bar.update(evaluation.progress - bar.n)
        if evaluation is None or evaluation.status != evaluation.Status.SUCCEEDED:
            self.stdout.write(f"Evaluation failed: {evaluation.error if evaluation else 'none queued'}")
            return
        self.stdout.write(evaluation_markdown(evaluation))
        model.refresh_from_db()
        if model.promotion:
            self.stdout.write(f"Promotion gate: {model.promotion['reason']} -> "
                              f"{'promoted' if model.promotion['passed'] else 'not promoted'}")


def _flag(param: str | None, objective: str) -> str:
    """The command-line flag for an API ``param`` (``method.supervised.hyperparameters.n_epochs`` → --n-epochs,
    ``method.reinforcement.grader.operation`` → --grader (operation))."""
    prefix = services.hyperparameters_param(objective) + "."
    if param and param.startswith(prefix):
        return "--" + param.removeprefix(prefix).replace("_", "-")
    grader = f"method.{objective}.grader"
    if param and (param == grader or param.startswith(grader + ".")):
        return "--grader" + (f" ({param.removeprefix(grader + '.')})" if param != grader else "")
    return param or "input"


def _grader(text: str | None) -> dict | None:
    """--grader as JSON, or @path to a JSON file."""
    if not text:
        return None
    try:
        return json.loads(Path(text[1:]).read_text() if text.startswith("@") else text)
    except (OSError, ValueError) as exc:
        raise CommandError(f"--grader: {exc}; give the grader as JSON or @file.json") from exc


def _gate(text: str | None) -> dict | None:
    if not text:
        return None
    metric, _, share = text.partition(":")
    try:
        return {"metric": metric, "min_improvement": float(share or 0)}
    except ValueError as exc:
        raise CommandError(f"--gate {text}: write METRIC:MIN_IMPROVEMENT, e.g. eval_loss:0.05") from exc


def evaluation_markdown(evaluation) -> str:
    """The metrics of base and tuned side by side, as a Markdown table."""
    tables = evaluation_tables(evaluation)
    lines = ["| metric | " + " | ".join(tables["targets"]) + " |", "|---" * (len(tables["targets"]) + 1) + "|"]
    for row in tables["table"]:
        values = " | ".join("–" if v is None else f"{v:.4g}" for v in row["values"])
        lines.append(f"| {row['metric']} | {values} |")
    return "\n".join(lines)


def _is_local() -> bool:
    return not storage_is_s3()


def _follow(job: FineTuneJob, out) -> FineTuneJob:
    """Print the job's events and a progress bar until it finishes."""
    last_seq, bar, waited = 0, None, time.monotonic()
    while True:
        job.refresh_from_db()
        for event in job.events.filter(seq__gt=last_seq).order_by("seq"):
            last_seq = event.seq
            bar = _show(event, bar, out)
        if job.is_finished:
            if bar:
                bar.close()
            return job
        if job.status == FineTuneJob.Status.QUEUED and time.monotonic() - waited > QUEUE_HINT_SECONDS:
            out.write(queued_hint(job))
            waited = time.monotonic() + 10 * QUEUE_HINT_SECONDS
        time.sleep(POLL_SECONDS)


def queued_hint(job: FineTuneJob) -> str:
    """Why a job may still be queued: jobs ahead of it, or no worker at all."""
    running, waiting = jobs_ahead_of(job)
    if running or waiting:
        return (f"Still queued behind {running} running and {waiting} waiting job(s); it starts when a training "
                "worker is free.")
    return "Still queued: is a worker running? (`make worker`, or `make run` for everything)"


def _show(event, bar, out):
    data = event.data or {}
    if event.type != "metrics" or "step" not in data:
        (bar.write if bar else out.write)(event.message)
        return bar
    if bar is None:  # opened at the first step, so its rate does not count the model loading
        bar = tqdm(total=data["total_steps"], initial=data["step"], unit="step", dynamic_ncols=True,
                   bar_format=TRAINING_BAR)
    bar.update(data["step"] - bar.n)
    postfix = {}
    if "train_loss" in data:
        postfix["loss"] = f"{data['train_loss']:.4f}"
    if data.get("eta_seconds") is not None:  # the whole job: steps, passes, checkpoints, evaluation
        postfix["left"] = duration_text(data["eta_seconds"])
    bar.set_postfix(postfix)
    return bar
