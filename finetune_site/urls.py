from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from datasets_app import api as files_api
from finetune_site import views
from jobs_app import api as jobs_api
from models_app import api as models_api
from models_app.base_models import api as base_models_api
from webhooks_app import api as webhooks_api

handler400 = views.bad_request
handler403 = views.permission_denied
handler404 = views.not_found
handler500 = views.server_error


urlpatterns = [
    path("", views.home, name="home"),
    path("dashboard/active-jobs/", views.active_jobs, name="active_jobs"),
    path("dashboard/workers/", views.worker_status, name="worker_status"),
    path("start/sample-dataset/", views.tour_sample_dataset, name="tour_sample_dataset"),
    path("accounts/", include("accounts_app.urls")),
    path("datasets/", include("datasets_app.urls")),
    path("jobs/", include("jobs_app.urls")),
    path("models/", include("models_app.urls")),
    path("base-models/", include("models_app.base_models.urls")),
    path("webhooks/", include("webhooks_app.urls")),
    path("favicon.ico", views.favicon),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", views.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("v1/schema", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its script as a file: the page needs no inline script (CSP).
    path("v1/docs", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="docs"),
    path("v1/files", files_api.FilesApi.as_view(), name="files"),
    path("v1/files/<str:file_id>", files_api.FileApi.as_view(), name="file"),
    path("v1/files/<str:file_id>/content", files_api.FileContentApi.as_view(), name="file-content"),
    path("v1/datasets", files_api.DatasetsApi.as_view(), name="datasets"),
    path("v1/datasets/uploads", files_api.UploadsApi.as_view(), name="dataset-uploads"),
    path("v1/datasets/uploads/<str:upload_id>", files_api.UploadApi.as_view(), name="dataset-upload"),
    path("v1/datasets/uploads/<str:upload_id>/chunk", files_api.UploadChunkApi.as_view(),
         name="dataset-upload-chunk"),
    path("v1/datasets/uploads/<str:upload_id>/complete", files_api.UploadCompleteApi.as_view(),
         name="dataset-upload-complete"),
    path("v1/datasets/<str:file_id>", files_api.DatasetApi.as_view(), name="dataset"),
    path("v1/datasets/<str:file_id>/report", files_api.DatasetReportApi.as_view(), name="dataset-report"),
    path("v1/datasets/<str:file_id>/preview", files_api.DatasetPreviewApi.as_view(), name="dataset-preview"),
    path("v1/datasets/<str:file_id>/validate", files_api.DatasetValidateApi.as_view(), name="dataset-validate"),
    path("v1/datasets/<str:file_id>/stats", files_api.DatasetStatsApi.as_view(), name="dataset-stats"),
    path("v1/datasets/<str:file_id>/prepare", files_api.DatasetPrepareApi.as_view(), name="dataset-prepare"),
    path("v1/datasets/<str:file_id>/quality", files_api.DatasetQualityApi.as_view(), name="dataset-quality"),
    path("v1/datasets/<str:file_id>/dry-run", files_api.DatasetDryRunApi.as_view(), name="dataset-dry-run"),
    path("v1/datasets/<str:file_id>/versions", files_api.DatasetVersionsApi.as_view(), name="dataset-versions"),
    path("v1/fine_tuning/jobs", jobs_api.JobsApi.as_view(), name="jobs"),
    path("v1/fine_tuning/jobs/estimate", jobs_api.JobEstimateApi.as_view(), name="jobs-estimate"),
    path("v1/providers", jobs_api.ProvidersApi.as_view(), name="providers"),
    path("v1/providers/<str:provider_id>", jobs_api.ProviderApi.as_view(), name="provider"),
    path("v1/fine_tuning/alpha/graders/run", jobs_api.GraderRunApi.as_view(), name="graders-run"),
    path("v1/fine_tuning/alpha/graders/validate", jobs_api.GraderValidateApi.as_view(), name="graders-validate"),
    path("v1/fine_tuning/jobs/<str:job_id>", jobs_api.JobApi.as_view(), name="job"),
    path("v1/fine_tuning/jobs/<str:job_id>/cancel", jobs_api.JobCancelApi.as_view(), name="job-cancel"),
    path("v1/fine_tuning/jobs/<str:job_id>/pause", jobs_api.JobPauseApi.as_view(), name="job-pause"),
    path("v1/fine_tuning/jobs/<str:job_id>/resume", jobs_api.JobResumeApi.as_view(), name="job-resume"),
    path("v1/fine_tuning/jobs/<str:job_id>/events", jobs_api.JobEventsApi.as_view(), name="job-events"),
    path("v1/fine_tuning/jobs/<str:job_id>/checkpoints", jobs_api.JobCheckpointsApi.as_view(),
         name="job-checkpoints"),
    path("v1/chat/completions", models_api.ChatCompletionsApi.as_view(), name="chat-completions"),
    # before the stored completion's id: these names are not ids (which start with chatcmpl-)
    path("v1/chat/completions/datasets", models_api.CompletionsDatasetApi.as_view(), name="completions-dataset"),
    path("v1/chat/completions/import", models_api.CompletionsImportApi.as_view(), name="completions-import"),
    path("v1/chat/completions/settings", models_api.CompletionSettingsApi.as_view(), name="completions-settings"),
    path("v1/chat/completions/<str:completion_id>", models_api.StoredCompletionApi.as_view(),
         name="stored-completion"),
    path("v1/chat/completions/<str:completion_id>/messages", models_api.StoredCompletionMessagesApi.as_view(),
         name="stored-completion-messages"),
    path("v1/chat/completions/<str:completion_id>/feedback", models_api.StoredCompletionFeedbackApi.as_view(),
         name="stored-completion-feedback"),
    path("v1/base_models", base_models_api.BaseModelsApi.as_view(), name="base-models"),
    path("v1/base_models/<path:name>", base_models_api.BaseModelApi.as_view(), name="base-model"),
    path("v1/models", models_api.ModelsApi.as_view(), name="models"),
    path("v1/models/<path:model_id>/download", models_api.ModelDownloadApi.as_view(), name="model-download"),
    path("v1/models/<path:model_id>", models_api.ModelApi.as_view(), name="model"),
    path("v1/registry/models/<path:model_id>/exports", models_api.ModelExportsApi.as_view(), name="model-exports"),
    path("v1/registry/models/<path:model_id>/evaluations", models_api.ModelEvaluationsApi.as_view(),
         name="model-evaluations"),
    path("v1/registry/models/<path:model_id>/promote", models_api.ModelPromoteApi.as_view(), name="model-promote"),
    path("v1/registry/models/<path:model_id>/archive", models_api.ModelArchiveApi.as_view(), name="model-archive"),
    path("v1/registry/models/<path:model_id>/unarchive", models_api.ModelUnarchiveApi.as_view(),
         name="model-unarchive"),
    path("v1/registry/models/<path:model_id>/lineage", models_api.ModelLineageApi.as_view(), name="model-lineage"),
    path("v1/registry/models/<path:model_id>/card", models_api.ModelCardApi.as_view(), name="model-card"),
    path("v1/registry/models/<path:model_id>/usage", models_api.ModelUsageApi.as_view(), name="model-usage"),
    path("v1/registry/names", models_api.RegistryNamesApi.as_view(), name="registry-names"),
    path("v1/registry/names/<str:name>", models_api.RegistryNameApi.as_view(), name="registry-name"),
    path("v1/registry/names/<str:name>/rollback", models_api.AliasRollbackApi.as_view(), name="registry-rollback"),
    path("v1/registry/evaluations", models_api.EvaluationsApi.as_view(), name="evaluations"),
    path("v1/registry/evaluations/<str:evaluation_id>", models_api.EvaluationApi.as_view(), name="evaluation"),
    path("v1/registry/exports/<str:export_id>", models_api.ExportApi.as_view(), name="export"),
    path("v1/webhooks", webhooks_api.WebhooksApi.as_view(), name="webhooks"),
    path("v1/webhooks/<str:webhook_id>", webhooks_api.WebhookApi.as_view(), name="webhook"),
    path("v1/webhooks/<str:webhook_id>/deliveries", webhooks_api.WebhookDeliveriesApi.as_view(),
         name="webhook-deliveries"),
    path("v1/webhooks/<str:webhook_id>/test", webhooks_api.WebhookTestApi.as_view(), name="webhook-test"),
]
