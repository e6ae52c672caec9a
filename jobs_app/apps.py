from django.apps import AppConfig


class JobsAppConfig(AppConfig):
    name = "jobs_app"
    verbose_name = "Fine-tuning jobs"

    def ready(self) -> None:
        from datasets_app.signals import dataset_checked
        from jobs_app.receivers import jobs_recheck

        dataset_checked.connect(jobs_recheck, dispatch_uid="jobs_app.jobs_recheck")
