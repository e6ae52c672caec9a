"""Classifying an image with a tuned vision model (``POST /v1/images/classifications``).

The classifier is small and runs in the process that asks (torch is imported on the first request);
its files are fetched from storage once per process host, like the chat models' adapters.
"""

from django.conf import settings

from finetune_site.errors import InvalidRequest, NotFound
from models_app.selectors import fine_tuned_model_find
from models_app.services.inference import model_local_files

TOP_MAX = 100


def image_classify(*, user, model: str, image: bytes, top: int = 5) -> dict:
    """``{"model", "predictions": [{"label", "score"}, ...]}`` best first (``top`` of them) for ``image``
    (JPEG, PNG or WebP bytes) by ``user``'s vision model ``model`` (an id, ``name@v1``, ``name@alias``...)."""
    from workers.vision import ClassifierError, classify, is_classifier

    found = fine_tuned_model_find(user, model) if isinstance(model, str) and model else None
    if found is None:
        raise NotFound(f"No such model: {model!r}", param="model", code="model_not_found")
    if found.job.objective != "vision":
        raise InvalidRequest(
            f"{model} is a language model; classify images with a model a vision job made "
            "(chat with this one: POST /v1/chat/completions)",
            param="model",
        )
    if not image:
        raise InvalidRequest("send the image as the multipart field image", param="image")
    if len(image) > settings.DATASET_VISION_MAX_IMAGE_BYTES:
        raise InvalidRequest(
            f"the image is over {settings.DATASET_VISION_MAX_IMAGE_BYTES:,} bytes (DATASET_VISION_MAX_IMAGE_BYTES)",
            param="image",
        )
    if not 1 <= top <= TOP_MAX:
        raise InvalidRequest(f"top must be from 1 to {TOP_MAX}", param="top")
    local = str(model_local_files(found))
    if not is_classifier(local):
        raise InvalidRequest(f"{model} holds no image classifier", param="model")
    try:
        predictions = classify(local, image, top=top, max_pixels=settings.DATASET_VISION_MAX_PIXELS)
    except ClassifierError as error:
        raise InvalidRequest(str(error), param="image", code="invalid_image") from error
    return {"object": "image.classification", "model": found.id, "predictions": predictions}
