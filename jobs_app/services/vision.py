"""Vision jobs (``method.type = "vision"``): the request's strategy and options checked against the
dataset and model (``workers.vision.vision_plan``), the engine's ``VisionConfig`` built on a worker,
the designer of ``llm_designed`` wired to an OpenAI-compatible chat endpoint, and what a trained run
leaves on the job (strategy, design, evaluation)."""

import itertools
import json
import math
import statistics
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage

from datasets_app.models import Dataset
from finetune_site.errors import InvalidRequest
from finetune_site.files import storage_fetch
from models_app.base_models.models import BaseModel
from models_app.base_models.services import CNN, VISION_FAMILIES, base_model_local_path

VISION = "vision"


def vision_designer():
    """The designer of ``llm_designed``: a chat model behind an OpenAI-compatible endpoint
    (``VISION_DESIGNER_URL`` and ``VISION_DESIGNER_MODEL``, e.g. this platform's own /v1 and
    ``tiny-llama`` or a tuned model, with ``VISION_DESIGNER_API_KEY``); None when none is configured."""
    url, model = settings.VISION_DESIGNER_URL, settings.VISION_DESIGNER_MODEL
    if not url or not model:
        return None

    def designer(messages: list[dict]) -> str:
        import requests

        response = requests.post(
            f"{url.rstrip('/')}/chat/completions",
            timeout=settings.VISION_DESIGNER_TIMEOUT,
            headers={"Authorization": f"Bearer {settings.VISION_DESIGNER_API_KEY}"},
            json={"model": model, "messages": messages, "temperature": 0},
        )
        response.raise_for_status()
        return response.json()["choices"][0]["message"]["content"] or ""

    return designer


def vision_model_check(base_model: BaseModel, objective: str, param: str = "model") -> None:
    """``cnn`` and backbones train images only; language models train text only."""
    is_vision_model = base_model.family in VISION_FAMILIES
    if objective == VISION and not is_vision_model:
        raise InvalidRequest(
            f"{base_model.name} is a language model; a vision job names model {CNN!r} (native, "
            "llm_designed) or a registered vision backbone (transfer)",
            param=param,
        )
    if objective != VISION and is_vision_model:
        raise InvalidRequest(f"{base_model.name} is an image model; {objective} trains a language model", param=param)


def job_vision_hyperparameters(
    given: dict | None, *, dataset: Dataset, base_model: BaseModel, validation: Dataset | None, designer=None
) -> dict:
    """The vision job's options with its strategy chosen; a 400 naming the option (``strategy`` when no
    strategy can train this dataset with this model)."""
    from workers.hyperparameters import OptionError
    from workers.vision import summary_from_stats, vision_plan

    if validation is not None:
        raise InvalidRequest(
            "a vision job holds out validation images from its own dataset: split it "
            '(POST /v1/datasets/{id}/prepare [{"op": "split"}]) instead of a validation_file',
            param="validation_file",
        )
    if dataset.status != Dataset.Status.READY:
        raise InvalidRequest(
            f"{dataset.id} ({dataset.filename}) is {dataset.status}: a vision job reads its classes, "
            "so create it once the dataset is ready",
            param="training_file",
            code="dataset_not_ready",
        )
    try:
        return vision_plan(
            given,
            summary_from_stats(dataset.stats or {}),
            backbone_path=_backbone_path(base_model),
            designer=designer or vision_designer(),
        )
    except OptionError as error:
        raise InvalidRequest(
            error.message, param=f"method.{VISION}.hyperparameters.{error.name}", code="invalid_hyperparameter"
        ) from error


def _backbone_path(base_model: BaseModel) -> str:
    return "" if base_model.family == "vision_cnn" else base_model_local_path(base_model)


def vision_config(job, workdir: Path, *, resume_from: str = ""):
    """The engine's config for a vision job: its archive and manifest fetched into ``workdir``;
    ``resume_from``: the local copy of the checkpoint it continues from ("" to start afresh)."""
    from workers.vision import config_make

    dataset = job.dataset
    return config_make(
        job.hyperparameters,
        archive_path=str(storage_fetch(dataset.file.name, workdir / "images" / Path(dataset.filename).name)),
        archive_name=dataset.filename,
        manifest_path=str(storage_fetch(dataset.training_file_name, workdir / "manifest.jsonl")),
        output_dir=str(workdir / "output"),
        backbone_path=_backbone_path(job.base_model),
        seed=job.seed,
        resume_from=resume_from,
    )


def vision_summary(result, *, job=None) -> dict:
    """What the job keeps of a vision run: its strategy, design (layers, parameters, multiply-adds) and
    evaluation on the held-out images; with ``job``, the thumbnails of its misclassified images are
    stored (``jobs/<id>/misclassified/``) and each entry names its ``thumbnail`` there."""
    evaluation = dict(result.evaluation or {})
    if job is not None and evaluation.get("misclassified"):
        evaluation["misclassified"] = _misclassified_store(job, result)
    return json.loads(
        json.dumps(
            {
                "strategy": result.strategy,
                "design": result.design,
                "evaluation": evaluation,
                "best_epoch": result.best_epoch,
                "epochs": result.epochs,
            }
        )
    )


def vision_thumbnails(vision: dict) -> list[str]:
    """The storage names of the thumbnails a ``vision_summary`` names."""
    return [e["thumbnail"] for e in vision["evaluation"].get("misclassified", []) if e.get("thumbnail")]


def _misclassified_store(job, result) -> list[dict]:
    kept = []
    for entry in result.evaluation["misclassified"]:
        entry = dict(entry)
        name = f"jobs/{job.id}/misclassified/{entry.pop('file')}"
        default_storage.delete(name)  # an earlier attempt's
        with open(Path(result.misclassified_dir) / Path(name).name, "rb") as handle:
            entry["thumbnail"] = default_storage.save(name, File(handle))
        kept.append(entry)
    return kept


def vision_sample_images(job, workdir: Path, count: int = 8) -> tuple[str, str, tuple[str, ...]]:
    """(local archive, its uploaded name, image names): ``count`` of the job's held-out images, the classes
    taking turns (e.g. to check an export of its classifier); only the archive is fetched into ``workdir``."""
    rows, train, valid = _vision_split(job)
    by_class: dict[str, list[str]] = {}
    for index in valid or train:
        by_class.setdefault(rows[index]["label"], []).append(rows[index]["image"])
    turns = [name for group in itertools.zip_longest(*by_class.values()) for name in group if name]
    dataset = job.dataset
    archive = storage_fetch(dataset.file.name, workdir / "images" / Path(dataset.filename).name)
    return str(archive), dataset.filename, tuple(turns[:count])


def _vision_split(job) -> tuple[list[dict], list[int], list[int]]:
    """(the manifest's rows, the training rows' indices, the held-out ones'), split as training splits."""
    from workers.vision.data import manifest_rows, split_rows

    with default_storage.open(job.dataset.training_file_name, "rb") as handle:
        rows = manifest_rows(handle)
    train, valid = split_rows(rows, share=job.hyperparameters["validation_share"], seed=job.seed)
    return rows, train, valid


PAST_VISION_RUNS = 5


def vision_estimate(job) -> dict:
    """Steps from the job's training images (the hold-out split as training makes it) and options; the
    time from the last finished runs of the same model and strategy, per image and pixel (a step's work
    grows with the batch and the image's area); no time before the first such run."""
    options = job.hyperparameters
    _, train, valid = _vision_split(job)
    per_epoch = math.ceil(len(train) / options["batch_size"])
    steps = per_epoch * options["n_epochs"]
    pace = _vision_pace(job)
    seconds = None if pace is None else round(pace * steps * options["batch_size"] * options["image_size"] ** 2, 1)
    return {"images": len(train), "validation_images": len(valid), "steps": steps, "steps_per_epoch": per_epoch,
            "tokens": 0, "seconds": seconds, "parts": None if seconds is None else {"training": seconds},
            "peak_memory_bytes": None, "basis": "past_runs" if pace else "none"}


def _vision_pace(job) -> float | None:
    """Seconds per image and pixel of the last finished single-attempt runs like ``job`` (median)."""
    from jobs_app.models import FineTuneJob

    past = (FineTuneJob.objects.filter(objective=VISION, status=FineTuneJob.Status.SUCCEEDED, attempt=1,
                                       base_model=job.base_model,
                                       hyperparameters__strategy=job.hyperparameters["strategy"])
            .exclude(pk=job.pk).order_by("-finished_at").values_list("metrics", "hyperparameters")[:PAST_VISION_RUNS])
    paces = [metrics["wall_seconds"] / (metrics["steps"] * options["batch_size"] * options["image_size"] ** 2)
             for metrics, options in past if metrics.get("steps") and metrics.get("wall_seconds")]
    return statistics.median(paces) if paces else None
