"""Chat replies (the playground and ``/v1/chat/completions``): queued to the inference worker, which
keeps models loaded, and streamed back through the channel layer."""

import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

from asgiref.sync import async_to_sync
from django.conf import settings

from finetune_site.errors import InvalidRequest, NotFound, ServerError, Unavailable
from jobs_app.models import Checkpoint
from jobs_app.selectors import checkpoint_find
from jobs_app.services import checkpoint_fetch
from models_app import tasks
from models_app.base_models.models import BaseModel
from models_app.base_models.services import base_model_local_path, base_model_usage_record
from models_app.models import FineTunedModel
from models_app.replies import ReplyGone, ReplySender, replies_collect, reply_channel_new, reply_receive
from models_app.selectors import model_public_id
from models_app.services.artifacts import model_files_fetch
from models_app.services.usage import model_usage_record

log = logging.getLogger(__name__)


MAX_CHOICES = 8  # ``n``: each choice is generated in turn
NO_INFERENCE_WORKER = ("no inference worker answered within {seconds}s: start one on the `inference` queue "
                       "(celery -A finetune_site worker -Q inference -c 1), or retry if it is busy")


def chat_completion_queue(*, model: BaseModel | FineTunedModel | Checkpoint, config: dict, reply_channel: str,
                          tag: str = "") -> None:
    """Ask the inference worker for a chat reply of ``model``, sent to ``reply_channel`` as it comes.

    ``config`` holds ``workers.inference.GenerateConfig``'s fields. The task expires when the
    caller stops waiting (INFERENCE_TIMEOUT_SECONDS): a worker that gets to it later skips it.
    """
    tasks.chat_completion_run.apply_async(args=[model_public_id(model), config, reply_channel, tag],
                                            expires=settings.INFERENCE_TIMEOUT_SECONDS)


def chat_completion_start(*, model: BaseModel | FineTunedModel | Checkpoint, config: dict) -> tuple[str, dict]:
    """Queue a chat reply and wait until the worker starts it: ``(reply channel, start message)``.

    Raises ``Unavailable`` when no inference worker answers in time, and the worker's error
    (``chat_completion_error``) when it cannot start: a prompt too long, a model that does not load.
    """
    channel = reply_channel_new()
    chat_completion_queue(model=model, config=config, reply_channel=channel)
    first = _reply_next(channel)
    if first["type"] == "inference.error":
        raise chat_completion_error(first)
    return channel, first


def chat_completion_finish(*, reply_channel: str) -> dict:
    """Wait for the rest of a started reply and return its ``done`` message (the whole text, usage)."""
    seconds = settings.INFERENCE_TIMEOUT_SECONDS
    try:
        last = async_to_sync(replies_collect)(reply_channel, seconds)[-1]
    except TimeoutError:
        raise Unavailable(f"the inference worker stopped answering for {seconds}s",
                          code="inference_unavailable") from None
    if last["type"] == "inference.error":
        raise chat_completion_error(last)
    return last


def chat_completion_error(message: dict) -> InvalidRequest:
    """The API error for an ``inference.error`` message."""
    code, text, param = message.get("code") or "inference_failed", message.get("message", ""), message.get("param")
    if code == "model_not_found":
        return NotFound(text, param=param, code=code)
    if code in ("context_length_exceeded", "invalid_request"):
        return InvalidRequest(text, param=param, code=code)
    if code == "inference_unavailable":
        return Unavailable(text, code=code)
    return ServerError(text, param=param, code=code)


def _reply_next(channel: str) -> dict:
    """The worker's first message that says how the reply starts (``loading`` only says it is coming)."""
    seconds = settings.INFERENCE_TIMEOUT_SECONDS
    try:
        while (message := async_to_sync(reply_receive)(channel, seconds))["type"] == "inference.loading":
            pass
        return message
    except TimeoutError:
        raise Unavailable(NO_INFERENCE_WORKER.format(seconds=seconds), code="inference_unavailable") from None


_inference_models = None  # this worker process's ModelCache, made on first use


def chat_completion_run(*, model_id: str, config: dict, reply_channel: str, tag: str = "") -> None:
    """Generate one chat reply here (in the inference worker) and send it to ``reply_channel``.

    Sends ``loading`` first when the model must be loaded (the first request of a model takes
    seconds), ``start`` (with whether the model was already loaded), the text piece by piece, then
    ``done``; or an ``error`` message with the reason instead. The model stays loaded for the
    next request; a fine-tuned model's files are fetched from storage once.
    """
    from workers.inference import ContextLengthExceeded, GenerateConfig, TemplateCannotWrite, generate

    started = time.monotonic()
    with ReplySender(reply_channel, tag) as reply:
        config = dict(config)
        choices = config.pop("n", 1)
        try:
            configs = _choice_configs(GenerateConfig(**config), choices)
        except (TypeError, ValueError, KeyError) as exc:
            reply.send("error", message=f"invalid request: {exc}", code="invalid_request", param=None)
            return
        try:
            loaded, hit = _inference_model_get(model_id, on_load=lambda: reply.send("loading", model=model_id))
            def start(tokens: int) -> None:
                reply.send("start", cache="hit" if hit else "miss", prompt_tokens=tokens)

            results = [generate(loaded, choice, lambda text, index=index: reply.send("delta", text=text, index=index),
                                on_start=start if index == 0 else None,
                                on_call=lambda call, index=index: reply.send("delta", text="", tool_call=call,
                                                                             index=index))
                       for index, choice in enumerate(configs)]
            done = _done_fields(results)
            # Counted before the reply ends, so a caller that reads the usage next finds this request.
            _usage_record(model_id, done, seconds=time.monotonic() - started)
            reply.send("done", **done)
        except ReplyGone:
            log.info("nobody reads %s any more; stopped generating", reply_channel)
        except ContextLengthExceeded as exc:
            reply.send("error", message=str(exc), code="context_length_exceeded", param="messages")
        except TemplateCannotWrite as exc:
            reply.send("error", message=str(exc), code="invalid_request", param=exc.param)
        except _ModelGone:
            reply.send("error", message=f"the model {model_id!r} no longer exists", code="model_not_found",
                       param="model")
        except Exception as exc:
            log.exception("chat completion with %s failed", model_id)
            reply.send("error", message=f"the model could not generate: {type(exc).__name__}: {exc}",
                       code="inference_failed", param=None)


def _usage_record(model_id: str, done: dict, *, seconds: float) -> None:
    """Count a finished reply for its fine-tuned version's usage, or its base model's; never fails the reply."""
    counts = {"prompt_tokens": done["prompt_tokens"], "completion_tokens": done["completion_tokens"],
              "latency_ms": seconds * 1000}
    try:
        model = FineTunedModel.objects.filter(pk=model_id).first()
        base = None if model is not None else BaseModel.objects.filter(name=model_id).first()
        if model is not None:
            model_usage_record(model=model, **counts)
        elif base is not None:
            base_model_usage_record(base_model=base, **counts)
    except Exception:
        log.exception("could not record the usage of %s", model_id)


def _choice_configs(config, choices: int) -> list:
    """One config per choice (``n``); a given seed is varied per choice, so the choices differ yet repeat."""
    if not 1 <= choices <= MAX_CHOICES:
        raise ValueError(f"n must be from 1 to {MAX_CHOICES}")
    if config.seed is None:
        return [config] * choices
    return [replace(config, seed=config.seed + index) for index in range(choices)]


def _done_fields(results: list) -> dict:
    """The ``done`` message: the first choice's fields (what a single reply reads), every choice, and the
    usage of them all."""
    return {**asdict(results[0]), "choices": [asdict(r) for r in results],
            "completion_tokens": sum(r.completion_tokens for r in results)}


class _ModelGone(Exception):
    pass


def _inference_model_get(model_id: str, on_load=None):
    """``(loaded model, already loaded)`` for a base model name or a fine-tuned model id; ``on_load()``
    is called first when the model is not loaded yet (fetching and loading it takes a while)."""
    global _inference_models
    from workers.inference import ModelCache

    if _inference_models is None:
        _inference_models = ModelCache(size=settings.INFERENCE_MODELS_KEPT)
    tuned = (FineTunedModel.objects.select_related("base_model").filter(pk=model_id).first()
             or checkpoint_find(model_id))
    base = _base_of(tuned) if tuned else BaseModel.objects.filter(name=model_id).first()
    if base is None:
        raise _ModelGone(model_id)
    base_path = base_model_local_path(base)
    if on_load is not None and not _inference_models.holds(base_path, _inference_dir(tuned) if tuned else None):
        on_load()
    adapter = str(model_local_files(tuned)) if tuned else None
    return _inference_models.get(base_path, adapter)


def _base_of(tuned: FineTunedModel | Checkpoint) -> BaseModel:
    return tuned.job.base_model if isinstance(tuned, Checkpoint) else tuned.base_model


def _inference_dir(model: FineTunedModel | Checkpoint) -> str:
    return str(Path(settings.WORK_DIR) / "inference" / model.id.replace(":", "_"))


def _weights_fetch(model: FineTunedModel | Checkpoint, target: Path) -> None:
    if isinstance(model, FineTunedModel):
        model_files_fetch(model, target)
    elif checkpoint_fetch(checkpoint=model, target=target, weights_only=True) is None:
        raise _ModelGone(model.id)  # its files were never completely stored


def model_local_files(model: FineTunedModel | Checkpoint) -> Path:
    """The model's (or checkpoint's) adapter or full weights on local disk, fetched from storage on first
    use."""
    target = Path(_inference_dir(model))
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".fetch-"))
    try:
        _weights_fetch(model, staging)
        (staging / ".complete").touch()
        shutil.rmtree(target, ignore_errors=True)  # an earlier fetch that did not complete
        os.replace(staging, target)  # appears whole, or not at all
    except OSError:
        if not (target / ".complete").exists():  # not another process that won the race
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
