"""The data step of the migrations that gave objects a project: each existing row belongs to its owner's
personal project (accounts_app 0004 made one per user)."""

from collections.abc import Callable

from django.db.models import OuterRef, Subquery


def personal_projects_backfill(app_label: str, model_names: list[str]) -> Callable:
    """A ``RunPython`` function setting ``project`` of ``model_names``'s rows from their ``owner``."""

    def backfill(apps, schema_editor) -> None:
        Project = apps.get_model("accounts_app", "Project")
        personal = Subquery(Project.objects.filter(personal_user_id=OuterRef("owner_id")).values("id")[:1])
        for name in model_names:
            apps.get_model(app_label, name).objects.filter(project__isnull=True).update(project_id=personal)

    return backfill
