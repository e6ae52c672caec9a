"""The registry: versions of a model name, aliases and their history, archive and delete."""

import tempfile
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from accounts_app.selectors import project_acting
from finetune_site.errors import Conflict, InvalidRequest
from finetune_site.files import storage_delete_all, storage_put_dir, storage_put_file
from finetune_site.semver import Semver, semver_parse, semver_text
from jobs_app.services import alias_check, job_event_add, job_model_name
from models_app.cards import model_card_generate
from models_app.models import AliasChange, FineTunedModel, ModelAlias
from models_app.services.artifacts import zip_write
from models_app.services.exports import export_kinds
from models_app.signals import model_promoted


def fine_tuned_model_create(*, job, adapter_dir: Path) -> FineTunedModel:
    """Store the adapter files of ``job`` and register the model that owns them, with its semantic version
    (``version_next``) and its generated model card (also ``README.md`` in the adapter zip)."""
    suffix = job.suffix or ""
    model_id = job.fine_tuned_model_name
    existing = FineTunedModel.objects.filter(pk=model_id).first()
    if existing is not None:  # a finish seen twice (a worker lost after registering): the files stay
        return existing
    prefix = f"models/{model_id.replace(':', '_')}/adapter"
    names = storage_put_dir(adapter_dir, prefix)
    name = job_model_name(suffix=suffix, base_model=job.base_model)  # never a base model's name
    try:
        with transaction.atomic():
            # Locks the name's versions so two jobs finishing together cannot both take the same number;
            # the very first version of a name is guarded by the unique constraints instead.
            versions = list(FineTunedModel.objects.select_for_update(of=("self",))
                            .filter(project_id=job.project_id, name=name)
                            .select_related("job__dataset"))
            model = FineTunedModel(
                id=model_id,
                owner=job.owner,
                project_id=job.project_id,
                job=job,
                base_model=job.base_model,
                name=name,
                version=max((v.version for v in versions), default=0) + 1,
                checkpoint=job.checkpoints.order_by("-step").first(),
                adapter=job.hyperparameters.get("adapter", "full"),  # vision: every weight of the classifier
                adapter_path=prefix,
            )
            model.major, model.minor, model.patch = version_next(job=job, versions=versions)
            model.card = model_card_generate(model, evaluations=())
            with tempfile.TemporaryDirectory() as tmp:
                archive = zip_write(adapter_dir, Path(tmp) / "adapter.zip", readme=model.card)
                names.append(storage_put_file(archive, f"{prefix}.zip"))
            model.artifact_files = names
            model.save(force_insert=True)
            return model
    except Exception:
        if not FineTunedModel.objects.filter(pk=model_id).exists():  # never the files another finish registered
            storage_delete_all(names)
        raise


def version_signature(job) -> dict:
    """What the bump rule compares between two versions' jobs (a copy lives in migration 0009)."""
    return {"base_model": job.base_model_id, "objective": job.objective,
            "data": job.dataset.sha256 or job.dataset_id, "hyperparameters": job.hyperparameters}


def version_bump(previous: dict, current: dict) -> str:
    """``major`` when the base model or the objective changed, ``minor`` when the training data did,
    else ``patch`` (hyperparameters only, or a retrain of the same)."""
    if previous["base_model"] != current["base_model"] or previous["objective"] != current["objective"]:
        return "major"
    return "minor" if previous["data"] != current["data"] else "patch"


def version_next(*, job, versions: list[FineTunedModel]) -> Semver:
    """The semantic version of the model ``job`` makes, given the name's existing ``versions``: 1.0.0 first;
    then the version the job asked for when it is still greater than the newest, else the newest bumped
    by ``version_bump`` against the latest made."""
    if not versions:
        return semver_parse(job.version) or (1, 0, 0)
    top = max((v.major, v.minor, v.patch) for v in versions)
    asked = semver_parse(job.version)
    if asked and asked > top:
        return asked
    latest = max(versions, key=lambda v: v.version)
    major, minor, patch = top
    bumped = {"major": (major + 1, 0, 0), "minor": (major, minor + 1, 0), "patch": (major, minor, patch + 1)}[
        version_bump(version_signature(latest.job), version_signature(job))]
    if asked:  # another version of the name took a greater number since the job was created
        job_event_add(job_id=job.id, level="warn",
                      message=f"Version {semver_text(asked)} is no longer newer than {semver_text(top)}; "
                              f"the model is {semver_text(bumped)} by the bump rule")
    return bumped


def registry_version_check(owner, name: str, version: Semver) -> None:
    """A version a job asks for must be greater than every version of the name (registered in
    ``ModelsAppConfig.ready`` as the jobs' ``job_version_check``)."""
    versions = (FineTunedModel.objects.filter(project=project_acting(owner), name=name)
                .values_list("major", "minor", "patch"))
    top = max(versions, default=None)
    if top is not None and version <= tuple(top):
        raise InvalidRequest(f"version {semver_text(version)} must be greater than {name}'s newest, "
                             f"{semver_text(tuple(top))}", param="version", code="version_not_newer")


def fine_tuned_model_delete(*, model: FineTunedModel) -> None:
    """Delete the model row (and its exports), then their stored files once the deletion is committed.

    A version an alias points at is refused: move or roll back the alias first.
    """
    _aliases_refuse(model, "delete")
    names = list(model.artifact_files) + [e.storage_path for e in model.exports.all() if e.storage_path]
    with transaction.atomic():
        model.delete()
        transaction.on_commit(lambda: storage_delete_all(names))


def model_promote(*, model: FineTunedModel, alias: str = "production", action: str = "promote") -> ModelAlias:
    """Point ``alias`` of the model's name at this version; the change is kept in the alias history."""
    alias_check(alias)
    if model.archived_at:
        raise Conflict(f"{model.reference} is archived; unarchive it before giving it an alias", param="alias")
    with transaction.atomic():
        current = ModelAlias.objects.select_for_update().filter(project_id=model.project_id, name=model.name,
                                                                alias=alias).first()
        if current and current.model_id == model.id:
            return current
        previous = current.model if current else None
        current, _ = ModelAlias.objects.update_or_create(project_id=model.project_id, name=model.name, alias=alias,
                                                         defaults={"model": model, "owner_id": model.owner_id})
        AliasChange.objects.create(owner=model.owner, project_id=model.project_id, name=model.name, alias=alias,
                                   model=model,
                                   previous=previous, action=action)
        model_promoted.send(sender=ModelAlias, alias=current, previous=previous, action=action)
    return current


def alias_rollback(*, owner, name: str, alias: str, version: int | str | None = None) -> ModelAlias:
    """Move ``alias`` back: to ``version`` (``1.4.0``, or N of ``name@vN``), or to the newest earlier
    version it pointed at before."""
    current = (ModelAlias.objects.filter(project=project_acting(owner), name=name, alias=alias)
               .select_related("model").first())
    if current is None:
        raise InvalidRequest(f"{name} has no alias {alias!r}", param="alias", code="alias_not_found")
    target = _rollback_target(current, version)
    return model_promote(model=target, alias=alias, action="rollback")


def _rollback_target(current: ModelAlias, version: int | str | None) -> FineTunedModel:
    versions = FineTunedModel.objects.filter(project_id=current.project_id, name=current.name,
                                             archived_at__isnull=True)
    if version is not None:
        semver = semver_parse(version)
        target = (versions.filter(major=semver[0], minor=semver[1], patch=semver[2]) if semver
                  else versions.filter(version=version)).first()
        if target is None:
            raise InvalidRequest(f"{current.name} has no unarchived version {version}", param="version")
        return target
    earlier = (AliasChange.objects.filter(project_id=current.project_id, name=current.name, alias=current.alias,
                                          model__version__lt=current.model.version, model__archived_at__isnull=True)
               .exclude(action="rollback").select_related("model").order_by("-model__version").first())
    if earlier is None:
        raise Conflict(f"{current.alias} of {current.name} never pointed at an earlier version that still exists; "
                       "promote one by version instead", param="alias", code="nothing_to_roll_back")
    return earlier.model


def model_actions(model: FineTunedModel) -> dict:
    """What a version allows now (what its page offers): an alias pins it, archiving retires it. A vision
    model classifies images (``vision``: the image playground, its held-out evaluation) and offers none
    of a language model's actions (``chat``: the text playground, ``evaluate_text``, adapter, merged
    and GGUF exports); ``export_kinds`` lists the exports it may ask for."""
    aliased = model.aliases.exists()
    vision = model.job.objective == "vision"
    kinds = [kind for kind in export_kinds(model.base_model) if kind != "adapter" or model.adapter != "full"]
    return {"promote": model.archived_at is None, "archive": model.archived_at is None and not aliased,
            "unarchive": model.archived_at is not None, "delete": not aliased,
            "export_adapter": not vision and model.adapter != "full", "export_kinds": kinds,
            "gguf": "gguf" in kinds, "vision": vision, "chat": not vision, "evaluate_text": not vision}


def model_archive(*, model: FineTunedModel, archived: bool = True) -> FineTunedModel:
    """Archive (or bring back) a version: it stays downloadable but can get no alias."""
    if archived:
        _aliases_refuse(model, "archive")
    model.archived_at = timezone.now() if archived else None
    model.save(update_fields=["archived_at"])
    return model


def _aliases_refuse(model: FineTunedModel, action: str) -> None:
    aliases = sorted(model.aliases.values_list("alias", flat=True))
    if aliases:
        raise Conflict(f"{model.reference} is {', '.join(aliases)}; promote another version or roll the alias "
                       f"back before you {action} it", param="model", code="version_has_alias")
