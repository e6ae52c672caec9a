from django.apps import AppConfig


class SweepsAppConfig(AppConfig):
    name = "sweeps_app"
    verbose_name = "Hyperparameter sweeps"

    def ready(self) -> None:
        from jobs_app.signals import job_transitioned
        from sweeps_app import receivers

        # A trial's job reaching a terminal status advances its sweep (no polling).
        job_transitioned.connect(receivers.trial_job_transitioned, dispatch_uid="sweeps_app.trial_job_transitioned")
