"""Writes for fine-tuned models, one module per topic (base models live in ``models_app.base_models``).

- ``registry``: versions, aliases and their history, archive, delete, and which actions a version allows
- ``artifacts``: what can be downloaded, and the stored files of a model
- ``exports``: verified adapter, merged and GGUF exports (image classifiers: TorchScript and ONNX)
- ``evaluations``: scoring a model against its base, the best checkpoint and the promotion gate
- ``inference``: chat replies through the inference worker
- ``completions``: the data loop: stored chat completions, their ratings and corrections, imports, and
  datasets made of them
- ``cards``: model card edits and the evaluation section refreshed as evaluations finish
- ``usage``: per-version chat usage, recorded by the inference worker
- ``classifications``: classifying an image with a tuned vision model
"""

from models_app.services.artifacts import ARTIFACTS, model_artifact_get, model_artifact_name, model_files_fetch
from models_app.services.cards import model_card_edit, model_card_evaluations_refresh, model_card_readme_store
from models_app.services.classifications import (
    base_classifier_note,
    image_classify,
    image_classify_run,
    image_compare,
    image_read,
    image_validate,
    vision_model_find,
)
from models_app.services.completions import (
    completion_retention_days,
    completion_row,
    completion_settings_update,
    completion_store,
    completions_dataset_create,
    completions_import,
    metadata_check,
    stored_completion_delete,
    stored_completion_feedback,
    stored_completion_metadata_update,
    stored_completions_purge,
)
from models_app.services.evaluations import (
    evaluation_create,
    evaluation_for_job,
    evaluation_limits_check,
    evaluation_run,
    promotion_gate_decide,
    vision_gate_apply,
)
from models_app.services.exports import export_create, export_kinds, export_options_check, export_run
from models_app.services.inference import (
    NO_INFERENCE_WORKER,
    chat_completion_error,
    chat_completion_finish,
    chat_completion_queue,
    chat_completion_run,
    chat_completion_start,
    model_local_files,
)
from models_app.services.registry import (
    alias_rollback,
    fine_tuned_model_create,
    fine_tuned_model_delete,
    model_actions,
    model_archive,
    model_promote,
    registry_version_check,
    version_bump,
    version_next,
)
from models_app.services.usage import model_usage_record

__all__ = [
    "base_classifier_note",
    "image_classify",
    "image_compare",
    "image_classify_run",
    "image_read",
    "image_validate",
    "vision_model_find",
    "completion_retention_days", "completion_row", "completion_settings_update", "completion_store",
    "completions_dataset_create", "completions_import", "metadata_check", "stored_completion_delete",
    "stored_completion_feedback", "stored_completion_metadata_update", "stored_completions_purge",
    "ARTIFACTS", "NO_INFERENCE_WORKER", "alias_rollback", "chat_completion_error", "chat_completion_finish",
    "chat_completion_queue", "chat_completion_run", "chat_completion_start", "evaluation_create",
    "evaluation_for_job", "evaluation_limits_check", "evaluation_run", "export_create", "export_kinds",
    "export_options_check", "export_run", "promotion_gate_decide", "vision_gate_apply", "fine_tuned_model_create",
    "fine_tuned_model_delete", "model_actions", "model_archive", "model_artifact_get", "model_artifact_name",
    "model_card_edit", "model_card_evaluations_refresh", "model_card_readme_store",
    "model_files_fetch", "model_local_files", "model_promote",
    "model_usage_record", "registry_version_check", "version_bump", "version_next",
]
