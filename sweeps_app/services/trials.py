"""A sweep's trials: asked of Optuna, started as jobs, scored when their job (or its evaluation) ends.

Optuna's study is not stored: it is rebuilt in memory from the sweep's trials each time it is needed
(``sweep_study``), so the trials table is the one record.
"""

import hashlib
import math

from django.db import transaction
from django.utils import timezone

from accounts_app.selectors import user_in_project
from finetune_site.errors import Conflict, Forbidden, InvalidRequest
from finetune_site.humane import ended_text
from finetune_site.status import status_allows, status_transition
from jobs_app.models import FINISHED, FineTuneJob, JobEvent
from jobs_app.services import job_actions, job_cancel, job_create
from models_app.models import Evaluation
from models_app.services.registry import model_promote
from sweeps_app.models import SWEEP_TRANSITIONS, Sweep, SweepTrial

Status, State = Sweep.Status, SweepTrial.State
# A trial's job metrics; any other objective is a metric of the evaluation after the job.
JOB_METRICS = ("valid_loss", "full_valid_loss", "valid_mean_token_accuracy", "train_loss")
VALIDATION_LOSSES = ("valid_loss", "full_valid_loss")  # what a pass reports: the pruner's intermediate values


def trials_start(sweep: Sweep) -> None:
    """Ask for trials until ``parallelism`` run or ``max_trials`` were asked. Counted from the stored
    trials under the sweep's row lock, so a second call (a prune, then its cancelled job's end) starts
    nothing more. A sweep whose owner no longer writes in its project is cancelled, saying why."""
    with transaction.atomic():
        Sweep.objects.select_for_update().filter(pk=sweep.pk).first()  # one advance at a time
        trials = list(sweep.trials.all())
        if _trials_wanted(sweep, trials):
            try:
                owner = user_in_project(sweep.owner, sweep.project)
            except Forbidden as refused:
                _sweep_stop(sweep, reason=refused.message)
                return
            while _trials_wanted(sweep, trials):
                trials.append(_trial_start(sweep, owner, number=len(trials), params=_ask(sweep, trials)))
        _sweep_finish_if_done(sweep, trials)


def _trials_wanted(sweep: Sweep, trials: list[SweepTrial]) -> bool:
    running = sum(t.state == State.RUNNING for t in trials)
    return sweep.status == Status.RUNNING and running < sweep.parallelism and len(trials) < sweep.max_trials


def _trial_start(sweep: Sweep, owner, *, number: int, params: dict) -> SweepTrial:
    request = sweep.job_request
    try:
        job = job_create(owner=owner, model=request["model"], training_file=request["training_file"],
                         validation_file=request["validation_file"], objective=request["objective"],
                         hyperparameters={**request["hyperparameters"], **params}, suffix=request["suffix"],
                         metadata={"sweep": sweep.id, "trial": str(number)})
    except InvalidRequest as refused:  # e.g. the file was deleted since: the trial fails, the sweep goes on
        return SweepTrial.objects.create(sweep=sweep, number=number, params=params, job=None, state=State.FAILED,
                                         note=refused.message[:300])
    return SweepTrial.objects.create(sweep=sweep, number=number, params=params, job=job)


def _ask(sweep: Sweep, trials: list[SweepTrial]) -> dict:
    """The next point: the next initial point if any is left (its missing names sampled), else
    Optuna's TPE over the trials so far (running ones as running, so parallel trials spread out)."""
    import optuna

    seed = int.from_bytes(hashlib.sha256(f"{sweep.id}:{len(trials)}".encode()).digest()[:4], "big")
    sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True,
                                         n_startup_trials=max(2, min(10, sweep.max_trials // 4)))
    # a pruned trial ranks by its last validation loss when that is what the sweep minimises
    ranked = sweep.metric in VALIDATION_LOSSES and sweep.direction == Sweep.Direction.MINIMIZE
    study = sweep_study(sweep, trials, sampler=sampler, losses=validation_losses(trials) if ranked else None)
    if len(trials) < len(sweep.initial_points):
        study.enqueue_trial(sweep.initial_points[len(trials)])
    return study.ask(sweep_distributions(sweep)).params


def sweep_study(sweep: Sweep, trials: list[SweepTrial] | None = None, *, sampler=None, pruner=None,
                losses: dict | None = None, direction: str = ""):
    """The sweep's Optuna study, rebuilt from ``trials`` (default: all of them): each trial in its
    Optuna state with its params, objective value and, when ``losses`` ({job id: {pass: validation
    loss}}) is given, the validation losses of its passes as intermediate values."""
    import optuna
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = list(sweep.trials.all()) if trials is None else trials
    distributions = sweep_distributions(sweep)
    states = {State.COMPLETE: TrialState.COMPLETE, State.FAILED: TrialState.FAIL, State.RUNNING: TrialState.RUNNING,
              State.PRUNED: TrialState.PRUNED, State.CANCELLED: TrialState.FAIL}
    study = optuna.create_study(direction=direction or sweep.direction, sampler=sampler, pruner=pruner)
    for trial in trials:
        study.add_trial(create_trial(
            params=trial.params, distributions=distributions, state=states[trial.state],
            value=trial.value if trial.state == State.COMPLETE else None,
            intermediate_values=(losses or {}).get(trial.job_id) or None))
    return study


def validation_losses(trials: list[SweepTrial]) -> dict[str, dict[int, float]]:
    """{job id: {pass: validation loss}} of the trials' jobs, passes numbered 1, 2, ... by step: the
    n-th pass of trials with other batch sizes or step counts is the one to compare. A pass at a step
    seen before (a later attempt resumed before it) replaces the earlier one."""
    by_step: dict[str, dict[int, float]] = {}
    events = (JobEvent.objects.filter(job_id__in=[t.job_id for t in trials if t.job_id], type=JobEvent.Type.METRICS,
                                      data__has_key="valid_loss")
              .order_by("job_id", "seq").values_list("job_id", "data__step", "data__valid_loss"))
    for job_id, step, loss in events:
        by_step.setdefault(job_id, {})[step or 0] = float(loss) if isinstance(loss, int | float) else math.nan
    return {job_id: {number: steps[step] for number, step in enumerate(sorted(steps), start=1)}
            for job_id, steps in by_step.items()}


def sweep_distributions(sweep: Sweep) -> dict:
    """Optuna's distribution of each hyperparameter of the search space."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    def distribution(spec: dict):
        if spec["type"] == "categorical":
            return CategoricalDistribution(spec["values"])
        if isinstance(spec["low"], int) and isinstance(spec["high"], int):
            return IntDistribution(spec["low"], spec["high"], log=spec["type"] == "loguniform")
        return FloatDistribution(spec["low"], spec["high"], log=spec["type"] == "loguniform")

    return {name: distribution(spec) for name, spec in sweep.search_space.items()}


def sweep_trial_finish(*, job_id: str) -> Sweep | None:
    """A trial's job ended, or its evaluation did: record its objective (or why it has none), then
    start the next trials or end the sweep. Safe to run twice for one job."""
    with transaction.atomic():
        sweep_id = SweepTrial.objects.filter(job_id=job_id).values_list("sweep_id", flat=True).first()
        if sweep_id is None:
            return None
        sweep = Sweep.objects.select_for_update().get(pk=sweep_id)  # one advance of a sweep at a time
        trial = SweepTrial.objects.select_related("job").get(job_id=job_id)
        if trial.state == State.RUNNING and trial.job.status in FINISHED:
            outcome = _outcome(trial.job, sweep.metric)
            if outcome is not None:
                trial.state, trial.value, trial.note = outcome
                trial.save(update_fields=["state", "value", "note"])
        if sweep.status == Status.RUNNING:
            trials_start(sweep)
    return sweep


def sweeps_catch_up() -> int:
    """Advance every running trial whose job has ended (the task its end queued was lost); returns
    how many. Run by celery beat."""
    ended = list(SweepTrial.objects.filter(state=State.RUNNING, job__status__in=FINISHED)
                 .exclude(sweep__status__in=[Status.SUCCEEDED, Status.FAILED]).values_list("job_id", flat=True))
    for job_id in ended:
        sweep_trial_finish(job_id=job_id)
    return len(ended)


def _outcome(job: FineTuneJob, metric: str) -> tuple[str, float | None, str] | None:
    """(state, value, note) of a trial whose job ended; None while its evaluation has not ended."""
    if job.status != FineTuneJob.Status.SUCCEEDED:
        return State.FAILED, None, f"the job {job.status}" + (f": {job.error['message']}"[:250] if job.error else "")
    if metric not in JOB_METRICS:
        return _evaluation_outcome(job, metric)
    last = (job.events.filter(type=JobEvent.Type.METRICS, data__has_key=metric).order_by("-seq")
            .values_list("data", flat=True).first())
    return _scored((last or {}).get(metric), f"the job logged no {metric}")


def _evaluation_outcome(job: FineTuneJob, metric: str) -> tuple[str, float | None, str] | None:
    """The objective from the evaluation the trial's model gets on the validation file when its job ends."""
    model = getattr(job, "result_model", None)
    if model is None:
        return State.FAILED, None, "the job made no model version to evaluate"
    evaluation = model.evaluations.filter(kind=Evaluation.Kind.AUTO).order_by("-created_at").first()
    if evaluation is None or evaluation.status in (Evaluation.Status.QUEUED, Evaluation.Status.RUNNING):
        return None
    if evaluation.status != Evaluation.Status.SUCCEEDED:
        return State.FAILED, None, f"its evaluation {evaluation.id} failed: {evaluation.error}"[:300]
    return _scored((evaluation.metrics.get("tuned") or {}).get(metric),
                   f"its evaluation {evaluation.id} measured no {metric} (accuracy and exact_match need label-like "
                   "answers, generation metrics need prompts)")


def _scored(value, missing: str) -> tuple[str, float | None, str]:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return State.FAILED, None, missing
    return State.COMPLETE, float(value), ""


def _sweep_finish_if_done(sweep: Sweep, trials: list[SweepTrial]) -> None:
    """A running sweep ends once every trial it may ask for has ended."""
    if sweep.status != Status.RUNNING or len(trials) < sweep.max_trials:
        return
    if any(t.state == State.RUNNING for t in trials):
        return
    _sweep_end(sweep, Status.SUCCEEDED if any(t.state == State.COMPLETE for t in trials) else Status.FAILED)


def _sweep_end(sweep: Sweep, status: str, *, reason: str = "") -> None:
    """The one writer of ``Sweep.status``, by ``SWEEP_TRANSITIONS``: running → succeeded, failed or cancelled."""
    ended = status_transition(Sweep, sweep.pk, status, rules=SWEEP_TRANSITIONS, finished_at=timezone.now(),
                              reason=reason)
    sweep.status, sweep.finished_at, sweep.reason = ended.status, ended.finished_at, ended.reason


def sweep_actions(sweep: Sweep) -> dict[str, bool]:
    """What the sweep's page offers: cancel while the rules allow it, promote once a trial is complete."""
    return {"cancel": status_allows(SWEEP_TRANSITIONS, sweep.status, Status.CANCELLED),
            "promote_best": sweep_best_trial(sweep) is not None}


def sweep_cancel(*, sweep: Sweep) -> Sweep:
    """Stop a running sweep: it asks for no more trials, and its trials' unfinished jobs are cancelled
    (those trials marked cancelled). A trial whose job already ended still gets its value."""
    with transaction.atomic():
        sweep = Sweep.objects.select_for_update().get(pk=sweep.pk)
        if not sweep_actions(sweep)["cancel"]:
            raise Conflict(f"{sweep.id} {ended_text(sweep.status)}; only a running sweep can be cancelled",
                           param="sweep_id", code="sweep_finished")
        _sweep_stop(sweep)
    return sweep


def _sweep_stop(sweep: Sweep, *, reason: str = "") -> None:
    """Cancel the running sweep (held by the caller) and its trials' unfinished jobs; ``reason``: why,
    when its owner did not ask."""
    said = f": {reason}" if reason else ""
    for trial in sweep.trials.filter(state=State.RUNNING).select_related("job"):
        if trial.job is not None and job_actions(trial.job)["cancel"]:
            job_cancel(job=trial.job, reason=f"its sweep {sweep.id} was cancelled{said}"[:300])
            trial.state, trial.note = State.CANCELLED, f"the sweep was cancelled{said}"[:300]
            trial.save(update_fields=["state", "note"])
    _sweep_end(sweep, Status.CANCELLED, reason=reason[:300])


def sweep_best_trial(sweep: Sweep) -> SweepTrial | None:
    """The complete trial with the best objective (the first of equals), or None."""
    complete = [t for t in sweep.trials.all() if t.state == State.COMPLETE]
    sign = 1 if sweep.direction == Sweep.Direction.MINIMIZE else -1
    return min(complete, key=lambda t: (sign * t.value, t.number), default=None)


def sweep_promote_best(*, sweep: Sweep, alias: str = "production"):
    """Point ``alias`` at the model version of the sweep's best trial (the registry's promote)."""
    best = sweep_best_trial(sweep)
    if best is None:
        raise Conflict(f"{sweep.id} has no complete trial yet to promote", param="sweep_id", code="no_best_trial")
    model = getattr(best.job, "result_model", None)
    if model is None:
        raise Conflict(f"trial {best.number} ({best.job_id}) made no model version", param="sweep_id")
    return model_promote(model=model, alias=alias)
