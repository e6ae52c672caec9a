"""Writes for fine-tuning jobs, one module per topic. Only ``job_transition`` writes
``FineTuneJob.status``.

- ``creation``: checking a request and resolving its options (``job_create``)
- ``fit``: whether a job fits the workers' GPUs, and the memory savers that make it fit
- ``graders``: checking a grader and running it on one sample, before any compute
- ``judged``: an RLAIF job's judged pairs, stored as a version of its prompts
- ``judges``: the judge models of score_model graders (tuned ones resolved by a hook models_app registers)
- ``gate``: a job's promotion gate and alias names
- ``lifecycle``: status transitions, events, cancel / pause / resume and which of them a job allows
- ``preflight``: the file, template and row checks before a job is queued (``job_validate``)
- ``estimates``: tokens, steps, time and memory before a run
- ``costs``: what a job would cost on a provider, before launch (``job_price_estimate``)
- ``quotas``: account quotas and the queue's order (priority, fair share, age)
- ``running``: claiming a job, building the engine's config, finishing or retrying the attempt
- ``results``: a succeeded job's step metrics as a CSV file (its ``result_files``)
- ``leases``: heartbeats, the reaper, workers' devices and liveness
- ``providers``: remote OpenAI-compatible fine-tuning APIs, their keys sealed
- ``remote``: a job on a remote provider: upload, create once, mirror status, events and checkpoints
- ``tracking``: experiment trackers (``integrations``): checked, the engine's settings, where a run is
- ``engine``: the engine's ``emit`` (``JobReporter``) and ``should_stop`` (``JobControl``)
- ``vision``: vision jobs: their strategy and options checked, the engine's config, a few held-out images
"""

from jobs_app.services.costs import job_cost, job_price_estimate, provider_costs, provider_prices
from jobs_app.services.creation import (
    hyperparameters_param,
    job_create,
    job_format_problem,
    job_grader_check,
    job_hyperparameters_resolve,
    job_model_name,
    job_request_check,
    job_suffix_check,
    job_version_check,
    job_version_check_register,
)
from jobs_app.services.engine import JobControl, JobReporter
from jobs_app.services.estimates import job_estimate, job_estimate_draft
from jobs_app.services.fit import job_fit_check
from jobs_app.services.gate import alias_check, promotion_gate_check
from jobs_app.services.graders import grader_run, grader_try, grader_validate
from jobs_app.services.judged import job_preferences_store
from jobs_app.services.judges import JudgeModel, judge_find, judge_resolver_register, judges_local
from jobs_app.services.leases import (
    WorkerLiveness,
    job_heartbeat,
    jobs_reap,
    jobs_release_for_shutdown,
    worker_register,
    worker_seen,
    worker_unregister,
)
from jobs_app.services.lifecycle import (
    job_actions,
    job_cancel,
    job_event_add,
    job_events_add,
    job_fail,
    job_metrics_add,
    job_pause,
    job_requeue,
    job_resume,
    job_send,
    job_transition,
)
from jobs_app.services.preflight import job_validate
from jobs_app.services.providers import provider_api_key, provider_create, provider_delete
from jobs_app.services.quotas import account_of, account_project, quota_for, quota_set
from jobs_app.services.remote import job_remote_cancel, job_remote_run
from jobs_app.services.results import job_result_file_create
from jobs_app.services.running import checkpoint_fetch, job_claim, job_claim_next, job_run, train_config
from jobs_app.services.tracking import job_integrations_check, job_tensorboard_archive, job_tracking
from jobs_app.services.vision import vision_sample_images

__all__ = [
    "JobControl", "JobReporter", "JudgeModel", "account_of", "account_project", "alias_check", "checkpoint_fetch",
    "grader_run", "grader_try",
    "grader_validate",
    "hyperparameters_param", "job_actions",
    "job_cancel", "job_claim", "job_claim_next", "job_create",
    "job_estimate", "job_estimate_draft", "job_event_add", "job_events_add",
    "job_fail", "job_fit_check", "job_format_problem", "job_grader_check", "job_heartbeat",
    "job_hyperparameters_resolve",
    "job_metrics_add", "job_model_name", "job_pause", "job_cost", "job_price_estimate", "job_request_check",
    "job_preferences_store", "job_remote_cancel", "job_remote_run", "job_requeue", "job_send", "provider_api_key",
    "provider_costs", "provider_create", "provider_delete", "provider_prices",
    "job_result_file_create", "job_resume", "job_run", "job_suffix_check", "job_transition", "job_validate",
    "job_version_check", "job_version_check_register", "job_integrations_check", "job_tensorboard_archive",
    "job_tracking",
    "jobs_reap", "jobs_release_for_shutdown", "judge_find", "judge_resolver_register", "judges_local",
    "promotion_gate_check", "quota_for", "quota_set", "train_config",
    "vision_sample_images", "WorkerLiveness", "worker_register", "worker_seen", "worker_unregister",
]
