from django.apps import AppConfig


class ModelsAppConfig(AppConfig):
    name = "models_app"
    verbose_name = "Models"

    def ready(self) -> None:
        from jobs_app.services import job_version_check_register, judge_resolver_register
        from jobs_app.signals import job_succeeded
        from models_app.receivers import judge_of, model_from_succeeded_job
        from models_app.services import registry_version_check

        job_succeeded.connect(model_from_succeeded_job, dispatch_uid="models_app.model_from_succeeded_job")
        judge_resolver_register(judge_of)  # score_model graders may name the owner's tuned models
        job_version_check_register(registry_version_check)  # a job's requested version must be new
