"""Vision jobs (``method.type = "vision"``): the request's strategy and options checked against the
dataset and model (``workers.vision.vision_plan``), the engine's ``VisionConfig`` built on a worker,
the designer of ``llm_designed`` wired to an OpenAI-compatible chat endpoint, and what a trained run
leaves on the job (strategy, design, evaluation)."""

import itertools
import json
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
    taking turns (e.g. to check an export of its classifier), fetched into ``workdir``."""
    from workers.vision.data import manifest_read, split_rows

    config = vision_config(job, workdir)
    rows = manifest_read(config.manifest_path)
    train, valid = split_rows(rows, share=config.validation_share, seed=config.seed)
    by_class: dict[str, list[str]] = {}
    for index in valid or train:
        by_class.setdefault(rows[index]["label"], []).append(rows[index]["image"])
    turns = [name for group in itertools.zip_longest(*by_class.values()) for name in group if name]
    return config.archive_path, config.archive_name, tuple(turns[:count])
