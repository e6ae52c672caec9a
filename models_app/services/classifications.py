"""Classifying an image with a tuned vision model (``POST /v1/images/classifications``, the playground).

The web process only checks the request (the model, the image's header); the inference worker
classifies, as it generates chat replies: the classifier's files are fetched from storage once and the
model stays loaded in that worker for the next request. The answer comes back on a reply channel
(``models_app.replies``): ``inference.done`` ``{predictions, cache}`` or ``inference.error``.
"""

import base64
import logging

from asgiref.sync import async_to_sync
from django.conf import settings

from finetune_site.errors import InvalidRequest, NotFound, Unavailable
from models_app import tasks
from models_app.base_models.models import BaseModel
from models_app.base_models.services import base_model_local_path
from models_app.models import FineTunedModel
from models_app.replies import ReplySender, replies_collect, reply_channel_new
from models_app.selectors import fine_tuned_model_find
from models_app.services.inference import NO_INFERENCE_WORKER, chat_completion_error, model_local_files

log = logging.getLogger(__name__)
TOP_MAX = 100


def image_classify(*, user, model: str, image: bytes, top: int = 5) -> dict:
    """``{"model", "predictions": [{"label", "score"}, ...], "cache"}`` best first (``top`` of them) for
    ``image`` (JPEG, PNG or WebP bytes) by ``user``'s vision model ``model`` (an id, ``name@v1``,
    ``name@alias``...), answered by the inference worker. ``cache`` says whether the worker had the
    classifier loaded (``hit``) or loaded it (``miss``)."""
    found = vision_model_find(user=user, model=model)
    image_validate(image)
    if not 1 <= top <= TOP_MAX:
        raise InvalidRequest(f"top must be from 1 to {TOP_MAX}", param="top")
    answer = _classify_on_worker(found.id, image, top)
    return {"object": "image.classification", "model": found.id, **answer}


def image_compare(*, user, model: str, image: bytes, top: int = 3) -> dict:
    """The vision playground: ``{"model", "tuned": [predictions], "base": [predictions] or None,
    "base_note"}``. A ``cnn`` model trained from scratch has no base to ask; a ``transfer`` model's
    backbone answers only when it is a classifier itself (a head over its features), and
    ``base_note`` says why there is no base column otherwise."""
    found = vision_model_find(user=user, model=model)
    tuned = image_classify(user=user, model=found.id, image=image, top=top)["predictions"]
    base, note = found.base_model, base_classifier_note(found)
    return {"model": found, "tuned": tuned, "base_note": note,
            "base": None if note else _classify_on_worker(base.name, image, top)["predictions"]}


def base_classifier_note(model: FineTunedModel) -> str:
    """Why ``model``'s base cannot classify an image (empty when it can), from what the worker that
    described the base recorded (its files are a worker's: the web process never fetches or unpacks them)."""
    from workers.vision import CLASSIFIER_ARCHITECTURE

    base = model.base_model
    if base.family == "vision_cnn":
        return (f"{model.name} was trained from scratch ({model.job.vision.get('strategy', 'native')} strategy on "
                f"{base.name}): there is no base model to compare with, so only its own predictions show.")
    if base.architecture != CLASSIFIER_ARCHITECTURE:
        return (f"{base.name} is a backbone without a classification head: it turns images into features, "
                "not classes, so it has no predictions of its own.")
    return ""


def _classify_on_worker(model_id: str, image: bytes, top: int) -> dict:
    """``{"predictions", "cache"}`` from the inference worker for a fine-tuned model id or a base model name."""
    channel = reply_channel_new()
    tasks.image_classify_run.apply_async(args=[model_id, base64.b64encode(image).decode(), top, channel],
                                         expires=settings.INFERENCE_TIMEOUT_SECONDS)
    seconds = settings.INFERENCE_TIMEOUT_SECONDS
    try:
        last = async_to_sync(replies_collect)(channel, seconds)[-1]
    except TimeoutError:
        raise Unavailable(NO_INFERENCE_WORKER.format(seconds=seconds), code="inference_unavailable") from None
    if last["type"] == "inference.error":
        raise chat_completion_error(last)
    return {"predictions": last["predictions"], "cache": last["cache"]}


def vision_model_find(*, user, model: str) -> FineTunedModel:
    """``user``'s model ``model`` that a vision job made; ``NotFound`` or ``InvalidRequest`` on ``model``."""
    found = fine_tuned_model_find(user, model) if isinstance(model, str) and model else None
    if found is None:
        raise NotFound(f"No such model: {model!r}", param="model", code="model_not_found")
    if found.job.objective != "vision":
        raise InvalidRequest(
            f"{model} is a language model; classify images with a model a vision job made "
            "(chat with this one: POST /v1/chat/completions)",
            param="model",
        )
    return found


def image_read(upload) -> bytes:
    """An uploaded image's bytes (b"" for none), refused (400 on ``image``) over the size limit before
    anything is read into memory."""
    if upload is None:
        return b""
    _size_check(upload.size)
    return upload.read()


def _size_check(size: int) -> None:
    if size > settings.DATASET_VISION_MAX_IMAGE_BYTES:
        raise InvalidRequest(
            f"the image is over {settings.DATASET_VISION_MAX_IMAGE_BYTES:,} bytes (DATASET_VISION_MAX_IMAGE_BYTES)",
            param="image",
        )


def image_validate(image: bytes) -> None:
    """Refuse (400 on ``image``) what is no JPEG, PNG or WebP, or is over the size or pixel limits, from its
    header alone: the image is decoded only in the worker."""
    from workers.vision import ClassifierError, image_check

    if not image:
        raise InvalidRequest("send the image as the multipart field image", param="image")
    _size_check(len(image))
    try:
        image_check(image, max_pixels=settings.DATASET_VISION_MAX_PIXELS)
    except ClassifierError as error:
        raise InvalidRequest(f"{error} (DATASET_VISION_MAX_PIXELS)" if "pixels" in str(error) else str(error),
                             param="image", code="invalid_image") from error


def image_classify_run(*, model_id: str, image: str, top: int, reply_channel: str) -> None:
    """Classify ``image`` (base64) here, in the inference worker, and send the ranked classes to
    ``reply_channel`` (``done``), or an ``error`` message with the reason."""
    from workers.vision import ClassifierError, classifier_get, classify, is_classifier

    with ReplySender(reply_channel) as reply:
        try:
            local = _classifier_dir(model_id)
            if local is None:
                reply.send("error", message=f"the model {model_id!r} no longer exists", code="model_not_found",
                           param="model")
                return
            if not is_classifier(local):
                reply.send("error", message=f"{model_id} holds no image classifier", code="invalid_request",
                           param="model")
                return
            _, _, hit = classifier_get(local)
            predictions = classify(local, base64.b64decode(image), top=top,
                                   max_pixels=settings.DATASET_VISION_MAX_PIXELS)
            reply.send("done", predictions=predictions, cache="hit" if hit else "miss")
        except ClassifierError as error:
            reply.send("error", message=str(error), code="invalid_request", param="image")
        except Exception as error:
            log.exception("classifying with %s failed", model_id)
            reply.send("error", message=f"the model could not classify: {type(error).__name__}: {error}",
                       code="inference_failed", param=None)


def _classifier_dir(model_id: str) -> str | None:
    """The local directory of a fine-tuned model's classifier (fetched from storage once), or of a base
    model's; None when neither exists."""
    model = FineTunedModel.objects.filter(pk=model_id).first()
    if model is not None:
        return str(model_local_files(model))
    base = BaseModel.objects.filter(name=model_id).first()
    return base_model_local_path(base, fetch=True) if base is not None else None
