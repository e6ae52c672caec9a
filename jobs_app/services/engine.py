"""The bridge between a job and the engine: ``JobReporter`` is the engine's ``emit`` (events become
JobEvent and Checkpoint rows), ``JobControl`` its ``should_stop`` (answered from the job's row)."""

import contextvars
import json
import logging
import math
import queue
import threading
import time
from datetime import timedelta
from pathlib import Path

from django.db import connection, transaction
from django.utils import timezone

from finetune_site.errors import Conflict
from finetune_site.files import storage_put_dir, storage_put_file
from jobs_app.broadcast import job_listen
from jobs_app.models import Checkpoint, FineTuneJob, JobEvent
from jobs_app.services.gangs import gang_part_add, job_nodes
from jobs_app.services.judged import job_preferences_store
from jobs_app.services.lifecycle import job_event_add, job_events_add
from jobs_app.signals import job_validated
from workers.events import ArtifactSaved, LogLine, Metric, Progress

log = logging.getLogger(__name__)
Status = FineTuneJob.Status
MANIFEST = "manifest.json"


class JobControl:
    """The engine's ``should_stop``: asked after every step, answered from the job's row.

    Reading the row every step cost a small model ~0.3 ms a step (a query after a step's
    compute is that slow on a busy CPU). The row is read instead when a message about the job
    arrived since the last read (every change of a job is published to its group after commit:
    a cancel, a pause request) and at least every ``CONTROL_POLL_SECONDS`` (a stop request that
    sends none: a worker shutting down; a lost message). Without a channel layer: every step.
    A context manager: leaving it stops listening.
    """

    def __init__(self, job: FineTuneJob) -> None:
        self.job = job
        self.changed = threading.Event()
        self.changed.set()  # the first step reads the row
        self.read_at = 0.0
        rows = FineTuneJob.objects.filter(pk=job.pk).values_list("status", "attempt", "stop_request")
        self.sql, self.params = rows.query.sql_with_params()  # built once, run every read
        try:
            self.unlisten = job_listen(job.id, self._heard)
        except Exception:
            log.warning("job %s: no channel layer; its row is read every step", job.id, exc_info=True)
            self.unlisten = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        if self.unlisten is not None:
            try:
                self.unlisten()
            except Exception:
                log.warning("job %s: could not stop listening", self.job.id, exc_info=True)

    def _heard(self, message: dict) -> None:
        if message.get("event", {}).get("type") != JobEvent.Type.METRICS:  # our own metrics change nothing
            self.changed.set()

    def __call__(self):
        from workers.config import Stop

        quiet = time.monotonic() - self.read_at < CONTROL_POLL_SECONDS
        if self.unlisten is not None and quiet and not self.changed.is_set():
            return Stop.NO
        self.changed.clear()  # before the read: a message during it is seen at the next step
        self.read_at = time.monotonic()
        with connection.cursor() as cursor:
            cursor.execute(self.sql, self.params)
            row = cursor.fetchone()
        if row is None or tuple(row[:2]) != (Status.RUNNING, self.job.attempt):
            return Stop.DISCARD  # cancelled, or another attempt owns the job
        return Stop.CHECKPOINT if row[2] else Stop.NO


CONTROL_POLL_SECONDS = 0.5


class JobReporter:
    """The ``emit`` the engine calls: events become JobEvent and Checkpoint rows.

    Rows are written by a background thread, in order, so the training loop never waits on the
    database or the channel layer; ``close`` waits until everything reported is stored. On node
    ``node`` of a job over several, a checkpoint is that node's part of it (``gangs.gang_part_add``).
    """

    def __init__(self, job: FineTuneJob, *, node: int = 0) -> None:
        self.job = job
        self.node = node
        self.clock = EtaClock(job.estimate or {})
        self.stale = False
        self.batched_at = 0.0
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        # The writer runs in the task's context: its rows carry the request id the task runs under.
        self.thread = threading.Thread(target=contextvars.copy_context().run, args=(self._drain,), daemon=True,
                                       name=f"events-{job.id}")
        self.thread.start()

    def __call__(self, event) -> None:
        now = time.monotonic()  # pace and time are taken when the step ends, not when it is written
        if isinstance(event, Progress):
            self.clock.step_ended(now, event.step)
        elif isinstance(event, Metric):
            if "eval_loss" in event.values:
                self.clock.eval_ended(now)
            self.queue.put((event, self.clock.seconds_left(event.step, event.total_steps), time.time()))
        elif isinstance(event, LogLine | ArtifactSaved):
            if isinstance(event, ArtifactSaved) and event.kind == "checkpoint":
                self.clock.save_ended(now)
            self.queue.put(event)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()

    def _drain(self) -> None:
        try:
            while (batch := self._next_batch()) is not None:
                for group in _runs_of_metrics(batch):
                    if not self.stale:
                        self._write(group)
        finally:
            connection.close()

    def _next_batch(self) -> list | None:
        """What arrived until BATCH_SECONDS after the previous batch: one transaction for many
        steps, yet an event after a quiet spell (the first step, a log line) goes at once."""
        batch = [self.queue.get()]
        deadline = self.batched_at + BATCH_SECONDS
        while batch[-1] is not None and (left := deadline - time.monotonic()) > 0:
            try:
                batch.append(self.queue.get(timeout=left))
            except queue.Empty:
                break
        if batch[-1] is None:
            batch.pop()
            if batch:
                self.queue.put(None)  # write these, then stop
            return batch or None
        self.batched_at = time.monotonic()
        return batch

    def _write(self, group) -> None:
        try:
            if isinstance(group, list):
                self._metrics(group)
            elif isinstance(group, LogLine):
                job_event_add(job_id=self.job.id, message=group.message, level=group.level,
                              expect_attempt=self.job.attempt)
            elif isinstance(group, ArtifactSaved) and group.kind == "checkpoint":
                self._checkpoint(group)
            elif isinstance(group, ArtifactSaved) and group.kind == "preferences":
                job_preferences_store(job=self.job, path=Path(group.path), ranking=group.metrics)
        except Conflict:
            self.stale = True  # another attempt owns the job: this one records nothing more
        except Exception:
            log.exception("could not record an event of %s", self.job.id)

    def _metrics(self, items: list[tuple[Metric, float | None, float]]) -> None:
        rows = [row for row in (self._metric(*item) for item in items) if row]
        if not rows:
            return
        etas = [eta for _, eta, _ in items if eta is not None]
        if etas:
            FineTuneJob.objects.filter(pk=self.job.pk, attempt=self.job.attempt).update(
                estimated_finish=timezone.now() + timedelta(seconds=etas[-1]))
        job_events_add(job_id=self.job.id, events=rows, expect_attempt=self.job.attempt)
        for data in (row["data"] for row in rows if "valid_loss" in row["data"]):
            self._validated(data)

    def _validated(self, data: dict) -> None:
        """Tell the apps above that a validation pass is stored; what they do with it (a sweep pruning
        the job) must not stop this job's events from being written."""
        answers = job_validated.send_robust(sender=FineTuneJob, job_id=self.job.id, attempt=self.job.attempt,
                                            step=data["step"], total_steps=data["total_steps"],
                                            valid_loss=data["valid_loss"])
        for receiver, answer in answers:
            if isinstance(answer, Exception):
                log.error("job %s: %s failed on a validation pass", self.job.id, receiver.__name__,
                          exc_info=answer)

    def _metric(self, event: Metric, eta: float | None, ended: float) -> dict | None:
        values = event.values
        if "loss" not in values and "eval_loss" not in values:
            return None  # the trainer's closing summary; the final transition reports it
        data = {"step": event.step, "total_steps": event.total_steps, "time": round(ended, 3)}
        data.update({_metric_name(k): v for k, v in values.items()})
        for ours, openai_name in OPENAI_METRIC_NAMES:
            if ours in data:
                data[openai_name] = data[ours]
        parts = [f"{k.replace('_', ' ')}={v:.4g}" for k, v in data.items()
                 if k in ("train_loss", "valid_loss", "learning_rate")]
        if eta is not None:
            data["eta_seconds"] = eta
        return {"type": JobEvent.Type.METRICS, "data": data,
                "message": f"Step {event.step}/{event.total_steps}: " + ", ".join(parts)}

    def _checkpoint(self, event: ArtifactSaved) -> None:
        directory = Path(event.path)
        directory.mkdir(parents=True, exist_ok=True)  # a node whose ranks wrote nothing of it: an empty part
        prefix = f"jobs/{self.job.id}/checkpoints/step-{event.step}"
        if job_nodes(self.job) == 1:
            (directory / MANIFEST).write_text(_manifest(directory, event))
            storage_put_dir(directory, prefix, last=MANIFEST)
            with transaction.atomic():
                self._checkpoint_record(event.step, prefix, event.metrics)
            return
        storage_put_dir(directory, prefix)
        with transaction.atomic():  # the job's row stays locked until the part that completes it is recorded
            manifest = gang_part_add(job=self.job, node=self.node, step=event.step,
                                     part=json.loads(_manifest(directory, event)))
            if manifest is None:
                return  # another node's part is still to come: that node completes the checkpoint
            (directory / MANIFEST).write_text(json.dumps(manifest))
            storage_put_file(directory / MANIFEST, f"{prefix}/{MANIFEST}")
            self._checkpoint_record(event.step, prefix, manifest["metrics"])

    def _checkpoint_record(self, step: int, prefix: str, metrics: dict) -> None:
        # the fenced event first: a superseded attempt records nothing
        job_event_add(job_id=self.job.id, message=f"Saved checkpoint at step {step}",
                      data={"checkpoint_step": step}, expect_attempt=self.job.attempt)
        Checkpoint.objects.update_or_create(job=self.job, step=step,
                                            defaults={"storage_path": prefix, "metrics": metrics})


_METRIC_NAMES = {"loss": "train_loss", "eval_loss": "valid_loss"}
# OpenAI's names for the trainer's other values, stored next to the trainer's own. The validation pass
# reads the whole validation file, so its values are OpenAI's full_valid_* too.
OPENAI_METRIC_NAMES = (("mean_token_accuracy", "train_mean_token_accuracy"),
                       ("eval_mean_token_accuracy", "valid_mean_token_accuracy"), ("valid_loss", "full_valid_loss"),
                       ("valid_mean_token_accuracy", "full_valid_mean_token_accuracy"))
# Events are stored at most this late, in one transaction per batch: each batch costs the busy
# CPU ~3 ms (benchmarks/overhead.py), and a progress bar moving once a second looks live.
BATCH_SECONDS = 1.0


def _runs_of_metrics(batch: list) -> list:
    """Consecutive metric events grouped into lists; other events stay single, in order."""
    groups: list = []
    for item in batch:
        if isinstance(item, tuple):
            if groups and isinstance(groups[-1], list):
                groups[-1].append(item)
            else:
                groups.append([item])
        else:
            groups.append(item)
    return groups


def _metric_name(name: str) -> str:
    return _METRIC_NAMES.get(name, name)


def _manifest(directory: Path, event: ArtifactSaved) -> str:
    files = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*")
                   if p.is_file() and p.name != MANIFEST)
    return json.dumps({"step": event.step, "metrics": event.metrics, "files": files})


class EtaClock:
    """Seconds left in a run, from what this attempt measured: the remaining steps at its step pace,
    the validation passes and checkpoints still ahead at their measured cost (the estimate's until
    one happened), then the parts after training that the estimate foresaw (finishing, evaluation).

    Fed from the training thread as events arrive; None until ``SETTLED_STEPS`` steps are timed.
    """

    SETTLED_STEPS = 2

    def __init__(self, estimate: dict) -> None:
        parts = estimate.get("parts") or {}
        self.evals, self.saves = estimate.get("evals") or 0, estimate.get("saves") or 0
        self.eval_each = parts.get("validation", 0) / self.evals if self.evals else 0.0
        self.save_each = parts.get("checkpoints", 0) / self.saves if self.saves else 0.0
        self.after = parts.get("finishing", 0) + parts.get("evaluation", 0)
        self.mark: float | None = None  # when the last step, pass or checkpoint ended
        self.first_step: int | None = None  # the first step this attempt logged (later after a resume)
        self.timed = {"step": [0.0, 0], "eval": [0.0, 0], "save": [0.0, 0]}

    def _timed(self, kind: str, now: float) -> None:
        if self.mark is not None:
            self.timed[kind][0] += now - self.mark
            self.timed[kind][1] += 1
        self.mark = now

    def step_ended(self, now: float, step: int = 1) -> None:
        if self.first_step is None:
            self.first_step = step
        self._timed("step", now)

    def eval_ended(self, now: float) -> None:
        self._timed("eval", now)

    def save_ended(self, now: float) -> None:
        self._timed("save", now)

    def _each(self, kind: str, foreseen: float) -> float:
        seconds, count = self.timed[kind]
        return seconds / count if count else foreseen

    def seconds_left(self, step: int, total_steps: int) -> float | None:
        seconds, steps = self.timed["step"]
        if steps < self.SETTLED_STEPS or not total_steps:
            return None
        left = (total_steps - step) * seconds / steps
        left += self._ahead("eval", self.evals, total_steps) * self._each("eval", self.eval_each)
        left += self._ahead("save", self.saves, total_steps) * self._each("save", self.save_each)
        return round(max(0.0, left + self.after), 1)

    def _ahead(self, kind: str, planned: int, total_steps: int) -> int:
        """Passes or checkpoints still to come: those this attempt has not seen end, less the share
        an earlier attempt made before the step this one resumed at."""
        before = math.floor(planned * ((self.first_step or 1) - 1) / total_steps)
        return max(0, planned - before - self.timed[kind][1])
