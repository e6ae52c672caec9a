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
    channel = reply_channel_new()
    tasks.image_classify_run.apply_async(args=[found.id, base64.b64encode(image).decode(), top, channel],
                                         expires=settings.INFERENCE_TIMEOUT_SECONDS)
    seconds = settings.INFERENCE_TIMEOUT_SECONDS
    try:
        last = async_to_sync(replies_collect)(channel, seconds)[-1]
    except TimeoutError:
        raise Unavailable(NO_INFERENCE_WORKER.format(seconds=seconds), code="inference_unavailable") from None
    if last["type"] == "inference.error":
        raise chat_completion_error(last)
    return {"object": "image.classification", "model": found.id, "predictions": last["predictions"],
            "cache": last["cache"]}


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


def image_validate(image: bytes) -> None:
    """Refuse (400 on ``image``) what is no JPEG, PNG or WebP, or is over the size or pixel limits, from its
    header alone: the image is decoded only in the worker."""
    from workers.vision import ClassifierError, image_check

    if not image:
        raise InvalidRequest("send the image as the multipart field image", param="image")
    if len(image) > settings.DATASET_VISION_MAX_IMAGE_BYTES:
        raise InvalidRequest(
            f"the image is over {settings.DATASET_VISION_MAX_IMAGE_BYTES:,} bytes (DATASET_VISION_MAX_IMAGE_BYTES)",
            param="image",
        )
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
        model = FineTunedModel.objects.filter(pk=model_id).first()
        if model is None:
            reply.send("error", message=f"the model {model_id!r} no longer exists", code="model_not_found",
                       param="model")
            return
        try:
            local = str(model_local_files(model))
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
