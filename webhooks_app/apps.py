from django.apps import AppConfig


class WebhooksAppConfig(AppConfig):
    name = "webhooks_app"
    verbose_name = "Webhooks and notifications"

    def ready(self) -> None:
        from datasets_app.signals import dataset_verdict
        from jobs_app.signals import job_transitioned
        from models_app.signals import evaluation_finished, model_promoted
        from webhooks_app import receivers

        # Each receiver runs inside the transaction of the change it reports: the outbox rows it
        # writes commit with the change or not at all.
        job_transitioned.connect(receivers.job_event_record, dispatch_uid="webhooks_app.job_event_record")
        dataset_verdict.connect(receivers.dataset_event_record, dispatch_uid="webhooks_app.dataset_event_record")
        model_promoted.connect(receivers.model_promoted_record, dispatch_uid="webhooks_app.model_promoted_record")
        evaluation_finished.connect(receivers.evaluation_event_record,
                                    dispatch_uid="webhooks_app.evaluation_event_record")
