from django.apps import AppConfig


class AccountsAppConfig(AppConfig):
    name = "accounts_app"
    verbose_name = "Accounts"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.db.models.signals import post_save

        post_save.connect(_personal_project, sender=get_user_model(), dispatch_uid="personal_project")


def _personal_project(sender, instance, created: bool, raw: bool = False, **kwargs) -> None:
    """Every user gets a personal project when created, so their first upload has somewhere to go (the one
    writer is ``project_personal_ensure``; ``selectors.project_personal`` only reads)."""
    if created and not raw:
        from accounts_app.services import project_personal_ensure

        project_personal_ensure(instance)
