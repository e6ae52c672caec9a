from django.apps import AppConfig


class SweepsAppConfig(AppConfig):
    name = "sweeps_app"
    verbose_name = "Hyperparameter sweeps"

    def ready(self) -> None:
        from jobs_app.signals import job_transitioned, job_validated
        from models_app.signals import evaluation_finished
        from sweeps_app import receivers

        # A trial's job reaching a terminal status advances its sweep (no polling).
        job_transitioned.connect(receivers.trial_job_transitioned, dispatch_uid="sweeps_app.trial_job_transitioned")
        # Each validation pass of a trial may prune it.
        job_validated.connect(receivers.trial_job_validated, dispatch_uid="sweeps_app.trial_job_validated")
        # An evaluation metric as the objective: the trial is scored when its evaluation ends.
        evaluation_finished.connect(receivers.trial_evaluated, dispatch_uid="sweeps_app.trial_evaluated")
