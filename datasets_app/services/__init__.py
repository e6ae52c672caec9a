"""Writes for datasets, one module per topic.

- ``options``: how a file is read (container, format, column map) and the read limits
- ``uploads``: whole-file and resumable uploads, and deleting a dataset
- ``hub``: datasets made from a hub dataset's split (fetched by the validation task)
- ``validation``: checking a stored dataset; the one writer of ``Dataset.status``
- ``stats``: token statistics per tokenizer and template (``TokenStats``)
- ``versions``: prepared versions (dedup, mask, filter, convert, split) with lineage, and versions made
  elsewhere (an RLAIF job's judged pairs); datasets made of rows from elsewhere (stored chat completions)
- ``quality``: the quality report
- ``results``: files the platform writes for a user (a job's step metrics)
- ``catalog``: a dataset's name, description and tags
- ``files``: temporary space, hashing and deleting stored files
"""

from datasets_app.services.catalog import dataset_catalog_update, tags_clean
from datasets_app.services.hub import dataset_hub_create
from datasets_app.services.options import column_map_parse, dataset_options_clean
from datasets_app.services.quality import dataset_quality, dataset_quality_fail, dataset_quality_request
from datasets_app.services.results import result_file_create
from datasets_app.services.stats import (
    token_stats_check,
    token_stats_compute,
    token_stats_current,
    token_stats_ensure,
    token_stats_request,
    token_stats_summary,
)
from datasets_app.services.uploads import (
    dataset_delete,
    dataset_sample_create,
    dataset_store,
    dataset_upload,
    upload_cancel,
    upload_chunk_append,
    upload_complete,
    upload_create,
)
from datasets_app.services.validation import (
    dataset_actions,
    dataset_fail,
    dataset_revalidate,
    dataset_transition,
    dataset_validate,
    dataset_verdict_after,
)
from datasets_app.services.versions import (
    dataset_operations_check,
    dataset_prepare,
    dataset_prepare_run,
    dataset_rows_create,
    dataset_version_add,
)

__all__ = [
    "column_map_parse", "dataset_actions", "dataset_catalog_update", "tags_clean",
    "dataset_delete", "dataset_fail", "dataset_hub_create", "dataset_operations_check", "dataset_options_clean",
    "dataset_prepare", "dataset_prepare_run", "dataset_quality", "dataset_quality_fail", "dataset_quality_request",
    "dataset_revalidate", "dataset_rows_create", "dataset_sample_create", "dataset_store", "dataset_transition",
    "dataset_upload",
    "dataset_validate", "dataset_verdict_after", "dataset_version_add", "result_file_create", "token_stats_check",
    "token_stats_compute", "token_stats_current", "token_stats_ensure", "token_stats_request", "token_stats_summary",
    "upload_cancel", "upload_chunk_append", "upload_complete", "upload_create",
]
