from django.apps import AppConfig


class PipelinesAppConfig(AppConfig):
    name = "pipelines_app"
    verbose_name = "Pipelines"

    def ready(self) -> None:
        from datasets_app.signals import dataset_checked
        from jobs_app.signals import job_transitioned
        from models_app.signals import evaluation_finished, export_finished
        from pipelines_app import receivers

        # A step's object reached an end: the runs waiting on it advance (queued after the commit).
        job_transitioned.connect(receivers.job_step_ended, dispatch_uid="pipelines_app.job_step_ended")
        dataset_checked.connect(receivers.dataset_step_ended, dispatch_uid="pipelines_app.dataset_step_ended")
        evaluation_finished.connect(receivers.evaluation_step_ended,
                                    dispatch_uid="pipelines_app.evaluation_step_ended")
        export_finished.connect(receivers.export_step_ended, dispatch_uid="pipelines_app.export_step_ended")
