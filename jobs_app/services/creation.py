"""Creating a job: check the request, resolve every "auto" option, queue the file checks."""

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from accounts_app.selectors import project_acting
from datasets_app.models import RESULTS_PURPOSE, Dataset
from datasets_app.selectors import dataset_rows
from finetune_site.errors import InvalidRequest
from finetune_site.semver import Semver, semver_parse
from jobs_app import tasks
from jobs_app.models import FineTuneJob, Provider
from jobs_app.selectors import provider_named, workers_alive
from jobs_app.services.estimates import job_estimate_draft
from jobs_app.services.fit import job_fit_check
from jobs_app.services.gate import promotion_gate_check
from jobs_app.services.judges import judge_problem
from jobs_app.services.lifecycle import job_event_add
from jobs_app.services.providers import LOCAL
from jobs_app.services.quotas import Need, job_quota_check, quota_needs_estimate
from jobs_app.services.tracking import job_integrations_check
from jobs_app.services.vision import VISION, job_vision_hyperparameters, vision_model_check
from models_app.base_models.models import BaseModel
from models_app.base_models.selectors import base_model_for_provider, base_model_named
from models_app.base_models.services import base_model_remote_register
from workers.formats import EXAMPLE_ROW, OBJECTIVE_FORMATS
from workers.graders import GraderError, grader_check
from workers.hyperparameters import GRADED_OBJECTIVES, Context, OptionError, hyperparameters_resolve

PAST_RUNS = 5  # the runs a memory estimate reads, as the time estimate does
UNKNOWN_ROWS = 10_000  # a file still being checked has no row count yet: size the batch as for a large one
Objective = FineTuneJob.Objective


def hyperparameters_param(objective: str, name: str = "") -> str:
    """Where an option sits in the API request, e.g. ``method.supervised.hyperparameters.n_epochs``."""
    return f"method.{objective}.hyperparameters" + (f".{name}" if name else "")


def job_hyperparameters_resolve(given: Mapping | None, *, objective: str, base_model: BaseModel, rows: int | None,
                                has_validation: bool | None) -> dict:
    """The job's options, checked and resolved (``workers.hyperparameters``); a 400 names the option."""
    peak, device = job_memory_known(base_model=base_model, adapter=(given or {}).get("adapter", "lora"),
                                    objective=objective)
    context = Context(objective=objective, parameters=base_model.parameters,
                      context_length=base_model.context_length, rows=rows, has_validation=has_validation,
                      peak_memory_bytes=peak, device_memory_bytes=device)
    try:
        return hyperparameters_resolve(given, context)
    except OptionError as error:
        raise InvalidRequest(error.message, param=hyperparameters_param(objective, error.name),
                             code="invalid_hyperparameter") from error


def job_memory_known(*, base_model: BaseModel, adapter: str, objective: str) -> tuple[int | None, int | None]:
    """(the memory estimate, one GPU's memory) for the "auto" memory savers; None where unknown.

    The estimate is the largest peak of the last finished runs of this model, adapter and objective
    trained without gradient checkpointing (a run with it measured the saver, not the need); the GPU is
    the largest a live registered worker advertised (CPU workers advertise none: RAM is not a hard limit).
    A remote provider's model has neither here.
    """
    if base_model.is_remote:
        return None, None
    runs = (FineTuneJob.objects.filter(base_model=base_model, objective=objective, status=FineTuneJob.Status.SUCCEEDED,
                                       hyperparameters__adapter=adapter).exclude(metrics={})
            .order_by("-finished_at").values_list("metrics", "hyperparameters"))
    runs = [metrics for metrics, hp in runs if not hp.get("gradient_checkpointing")][:PAST_RUNS]
    peak = max((m.get("peak_memory_bytes") or 0 for m in runs), default=0)
    gpus = [d.get("memory_bytes") or 0 for d in workers_alive().values_list("devices", flat=True)
            if d.get("kind") == "cuda"]
    return peak or None, max(gpus, default=0) or None


@dataclass(frozen=True)
class JobRequest:
    """A job request that passed every check, with each "auto" option resolved: what ``job_create``
    stores and what ``job_price_estimate`` prices (the two can never check differently)."""

    owner: object
    dataset: Dataset
    validation: Dataset | None
    base_model: BaseModel
    objective: str
    hyperparameters: dict
    suffix: str
    seed: int | None
    metadata: dict
    promotion_gate: dict
    evaluate_checkpoints: bool
    grader: dict
    provider: Provider | None  # None: this platform's workers ("local")
    version: str  # a registry version asked for ("1.4.0"), or "" for the bump rule
    integrations: list  # the experiment trackers, checked (``jobs_app.services.tracking``)


def job_request_check(*, owner, training_file: str, model: str, validation_file: str | None = None,
                      hyperparameters: dict | None = None, suffix: str = "", seed: int | None = None,
                      objective: str = Objective.SUPERVISED, promotion_gate: dict | None = None,
                      evaluate_checkpoints: bool = False, grader: dict | None = None, metadata: dict | None = None,
                      integrations: list | None = None, provider: str = LOCAL,
                      version: str = "") -> JobRequest:
    """Every check of ``job_create``, storing nothing: a 400 naming the param, or the checked request."""
    remote = job_provider_check(owner=owner, name=provider)
    if objective not in Objective.values:
        raise InvalidRequest(f"method.type {objective!r} is not supported; use one of {', '.join(Objective.values)}",
                             param="method.type")
    integrations = job_integrations_check(integrations)
    metadata = job_metadata_check(metadata)
    dataset = _dataset_for(owner, training_file, "training_file", objective)
    validation = _dataset_for(owner, validation_file, "validation_file", objective) if validation_file else None
    gate = promotion_gate_check(promotion_gate, has_validation=validation is not None, vision=objective == VISION)
    if evaluate_checkpoints and validation is None:
        raise InvalidRequest("evaluate_checkpoints scores checkpoints on the validation file: give validation_file",
                             param="evaluate_checkpoints")
    base = (base_model_named(model, user=owner) if remote is None
            else base_model_for_provider(model, user=owner, provider=remote.name))
    vision_model_check(base, objective)
    job_suffix_check(suffix, base_model=base)
    job_version_check(version, owner=owner, name=job_model_name(suffix=suffix, base_model=base))
    for dataset_, param in ((dataset, "training_file"), (validation, "validation_file")):
        problem = job_format_problem(dataset_, objective) if dataset_ else ""
        if problem:
            raise InvalidRequest(problem, param=param, code="invalid_file_format")
    grader = job_grader_check(grader, objective=objective, dataset=dataset)
    rows = dataset.row_count if dataset.status == Dataset.Status.READY else UNKNOWN_ROWS
    if objective == VISION:
        resolved = job_vision_hyperparameters(hyperparameters, dataset=dataset, base_model=base,
                                              validation=validation)
    else:
        resolved = job_hyperparameters_resolve(hyperparameters, objective=objective, base_model=base, rows=rows,
                                               has_validation=validation is not None)
    if remote is None and objective != VISION:  # a remote provider's GPUs (and bill) are its own affair
        resolved = job_fit_check(resolved, base_model=base, param=hyperparameters_param(objective))
        _job_budget_check(owner=owner, dataset=dataset, validation=validation, base_model=base,
                          hyperparameters=resolved, objective=objective)
    return JobRequest(owner=owner, dataset=dataset, validation=validation, base_model=base, objective=objective,
                      hyperparameters=resolved, suffix=suffix or "", seed=seed, metadata=metadata,
                      promotion_gate=gate, evaluate_checkpoints=evaluate_checkpoints, grader=grader,
                      provider=remote, version=version or "", integrations=integrations)


def _job_budget_check(*, owner, dataset: Dataset, validation: Dataset | None, base_model: BaseModel,
                      hyperparameters: dict, objective: str) -> None:
    """Refuse a job whose estimate alone is more than its account's monthly budget (a file still being
    checked has no rows to estimate yet: its queued job waits with the reason instead)."""
    if dataset.status != Dataset.Status.READY or not quota_needs_estimate(owner):
        return
    draft = job_estimate_draft(owner=owner, dataset=dataset, base_model=base_model, hyperparameters=hyperparameters,
                               validation=validation, objective=objective)
    hours = (draft["seconds"] or 0.0) * hyperparameters.get("devices", 1) / 3600
    job_quota_check(owner=owner, need=Need(gpu_hours=hours, tokens=draft["tokens"]))


def job_provider_check(*, owner, name) -> Provider | None:
    """The provider a job names: None for ``local`` (this platform's workers), else one of the owner's
    or the operator's providers; a 400 naming ``provider`` otherwise."""
    if name in (None, "", LOCAL):
        return None
    provider = provider_named(owner, name) if isinstance(name, str) else None
    if provider is None:
        raise InvalidRequest(f"unknown provider {name!r}; use {LOCAL!r} (this platform's workers) or one of "
                             "your providers (GET /v1/providers)", param="provider", code="provider_not_found")
    return provider


def job_create(*, owner, training_file: str, model: str, validation_file: str | None = None,
               hyperparameters: dict | None = None, suffix: str = "", seed: int | None = None,
               objective: str = Objective.SUPERVISED, promotion_gate: dict | None = None,
               evaluate_checkpoints: bool = False, grader: dict | None = None, metadata: dict | None = None,
               integrations: list | None = None, provider: str = LOCAL, version: str = "") -> FineTuneJob:
    """Check the request, resolve every "auto" hyperparameter and queue file validation.

    ``seed`` is drawn at random when not given, and stored either way (a run can be repeated).
    ``metadata`` is kept as given (OpenAI's limits); ``integrations`` name the experiment trackers the run
    reports to (TensorBoard, MLflow, Weights & Biases: ``jobs_app.services.tracking``).

    ``grader`` scores the samples of a reinforcement job (``workers.graders``), and goes with no other.

    With a validation file the tuned model is evaluated against its base when the job ends;
    ``promotion_gate`` then decides whether the new version gets an alias, and
    ``evaluate_checkpoints`` scores every checkpoint too and marks the best.

    ``version`` (``1.4.0``) overrides the registry's bump rule for the model the job makes; it must be
    greater than the newest version of the model's name (``job_version_check``).

    ``provider`` names where it runs: ``local`` (this platform's workers) or a remote provider, which
    gets the files and the job once they pass the same checks (``jobs_app.services.remote``). A job on a
    provider may name any model the provider offers (``gpt-4o-mini-2024-07-18``): registered here as a
    remote base model with the job; the provider checks it.
    """
    checked = job_request_check(
        owner=owner, training_file=training_file, model=model, validation_file=validation_file,
        hyperparameters=hyperparameters, suffix=suffix, seed=seed, objective=objective,
        promotion_gate=promotion_gate, evaluate_checkpoints=evaluate_checkpoints, grader=grader,
        metadata=metadata, integrations=integrations, provider=provider, version=version)
    with transaction.atomic():
        job = FineTuneJob.objects.create(
            owner=owner, project_id=checked.dataset.project_id, dataset=checked.dataset,
            validation_dataset=checked.validation,
            base_model=base_model_remote_register(checked.base_model), hyperparameters=checked.hyperparameters,
            suffix=checked.suffix,
            seed=secrets.randbelow(SEED_MAX + 1) if seed is None else seed, metadata=checked.metadata,
            max_attempts=settings.JOB_MAX_ATTEMPTS, objective=checked.objective,
            promotion_gate=checked.promotion_gate, evaluate_checkpoints=evaluate_checkpoints,
            grader=checked.grader, provider=checked.provider, version=checked.version,
            integrations=checked.integrations,
        )
        job_event_add(job_id=job.id, message=f"Created fine-tuning job: {job.id}")
        transaction.on_commit(lambda: tasks.job_validate.delay(job.id))
    return job


SEED_MAX = 2**31 - 1
METADATA_MAX_KEYS, METADATA_KEY_MAX, METADATA_VALUE_MAX = 16, 64, 512


def job_metadata_check(metadata) -> dict:
    """OpenAI's metadata: up to 16 string values under keys of up to 64 characters (values up to 512)."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or len(metadata) > METADATA_MAX_KEYS:
        raise InvalidRequest(f"metadata must be an object of at most {METADATA_MAX_KEYS} keys", param="metadata")
    for key, value in metadata.items():
        if not isinstance(key, str) or not 0 < len(key) <= METADATA_KEY_MAX:
            raise InvalidRequest(f"metadata keys must be 1 to {METADATA_KEY_MAX} characters", param="metadata")
        if not isinstance(value, str) or len(value) > METADATA_VALUE_MAX:
            raise InvalidRequest(f"metadata.{key} must be a string of at most {METADATA_VALUE_MAX} characters",
                                 param=f"metadata.{key}")
    return dict(metadata)


def job_format_problem(dataset: Dataset, objective: str) -> str:
    """Why a ready dataset cannot train with ``objective`` ("" when it can, or is not checked yet)."""
    if dataset.status != Dataset.Status.READY or objective == VISION:  # images: checked by _dataset_for
        return ""
    holds = f"{dataset.filename} ({dataset.id}) holds {dataset.format} rows"
    if objective == Objective.SUPERVISED:
        if dataset.training_format:
            return ""
        fits = [name for name, formats in OBJECTIVE_FORMATS.items() if dataset.format in formats]
        instead = f' (use method {{"type": "{fits[0]}"}} for {dataset.format.replace("_", " ")} rows)' if fits else ""
        return f"{holds}; supervised fine-tuning needs chat, alpaca, prompt/completion or text rows{instead}"
    formats = OBJECTIVE_FORMATS[objective]
    if dataset.format in formats:
        return ""
    return f"{holds}; {objective.upper()} needs " + " or ".join(
        f"{fmt.replace('_', ' ')} rows {EXAMPLE_ROW[fmt]}" for fmt in formats)


def job_grader_check(grader, *, objective: str, dataset: Dataset) -> dict:
    """The grader of a reinforcement job, checked against the fields of the training file's first row, its
    judge models against what the file's owner may use; a grader given to another objective is refused. A
    400 names the grader's field that is wrong."""
    if objective not in GRADED_OBJECTIVES:
        if grader:
            raise InvalidRequest(f"a grader scores the samples of reinforcement and rlaif; {objective} has none, "
                                 "leave it out", param=f"method.{objective}.grader", code="invalid_grader")
        return {}
    param = f"method.{objective}.grader"
    if not grader:
        raise InvalidRequest(f'{objective} needs a grader, e.g. {{"type": "string_check", "input": '
                             '"{{sample.output_text}}", "reference": "{{item.answer}}", "operation": "eq"}',
                             param=param, code="invalid_grader")
    first = dataset_rows(dataset, limit=1)
    try:
        grader_check(grader, item_fields=set(first[0]) if first else None, param=param,
                     judge_models=judge_problem(dataset.owner))
    except GraderError as error:
        raise InvalidRequest(error.message, param=error.param, code="invalid_grader") from error
    return dict(grader)


def _dataset_for(owner, file_id, param: str, objective: str) -> Dataset:
    if not isinstance(file_id, str) or not file_id:
        raise InvalidRequest(f"{param} must be a file id like file-abc123", param=param)
    dataset = Dataset.objects.filter(project=project_acting(owner), pk=file_id).first()
    if dataset is None:  # another project's file is "no such file" too
        raise InvalidRequest(f"No such file: {file_id}", param=param, code="file_not_found")
    if dataset.purpose == RESULTS_PURPOSE:
        raise InvalidRequest(f"{file_id} ({dataset.filename}) is a job's results, not training data", param=param,
                             code="invalid_file")
    if dataset.is_vision and objective != VISION:
        raise InvalidRequest(f"{file_id} ({dataset.filename}) is a vision dataset (images); language model jobs "
                             'train on text rows (images train with method {"type": "vision"})', param=param,
                             code="invalid_file")
    if objective == VISION and not dataset.is_vision:
        raise InvalidRequest(f"{file_id} ({dataset.filename}) holds text rows; a vision job trains on a vision "
                             "dataset (an archive of images uploaded with purpose=vision)", param=param,
                             code="invalid_file")
    if dataset.status == Dataset.Status.INVALID:
        first = ((dataset.validation_report or {}).get("summary") or "").split("\n")[0]
        raise InvalidRequest(f"{file_id} ({dataset.filename}) failed validation: {first}; see "
                             f"GET /v1/datasets/{file_id}/report", param=param, code="invalid_file")
    return dataset


VersionCheck = Callable[[object, str, Semver], None]  # (owner, model name, version) → raises InvalidRequest
_version_checks: list[VersionCheck] = []


def job_version_check_register(check: VersionCheck) -> None:
    """Let the registry (``models_app``, above this app) refuse a requested version that is not new."""
    if check not in _version_checks:
        _version_checks.append(check)


def job_version_check(version: str, *, owner, name: str) -> None:
    """A requested registry version is a plain semantic version (``1.4.0``) that the registry accepts."""
    if not version:
        return
    parsed = semver_parse(version)
    if parsed is None:
        raise InvalidRequest(f"version must be a semantic version like 1.4.0, not {version!r}", param="version",
                             code="invalid_version")
    for check in _version_checks:
        check(owner, name, parsed)


def job_suffix_check(suffix: str, *, base_model: BaseModel) -> None:
    """A suffix names the job's model in the registry: short, plain, and never a base model's name (the two
    would be mistaken for each other wherever a model is named)."""
    if suffix and (len(suffix) > 64 or not all(c.isascii() and (c.isalnum() or c in "-_") for c in suffix)):
        raise InvalidRequest("suffix must be at most 64 letters, digits, - or _", param="suffix")
    if suffix and suffix.lower() in _base_model_names():
        raise InvalidRequest(f"suffix {suffix!r} is the name of a base model, and the tuned model would be mistaken "
                             f"for it; choose another, or leave it empty to call the model "
                             f"{job_model_name(suffix='', base_model=base_model)}", param="suffix",
                             code="suffix_is_base_model")


DEFAULT_SUFFIX = "ft"


def job_model_name(*, suffix: str, base_model: BaseModel) -> str:
    """The registry name of the model a job makes: its suffix, else ``<base model>-ft``; never a base
    model's name (a suffix from before that rule gets ``-ft`` too)."""
    name = suffix or f"{base_model.name}-{DEFAULT_SUFFIX}"
    taken = _base_model_names()
    while name.lower() in taken:
        name = f"{name}-{DEFAULT_SUFFIX}"
    return name


def _base_model_names() -> set[str]:
    return {name.lower() for name in BaseModel.objects.values_list("name", flat=True)}
