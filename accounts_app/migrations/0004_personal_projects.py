"""Every user from before projects gets a personal project (owner role); their API keys act in it."""

import secrets

from django.conf import settings
from django.db import migrations


def personal_projects(apps, schema_editor) -> None:
    User = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    Project = apps.get_model("accounts_app", "Project")
    Membership = apps.get_model("accounts_app", "Membership")
    ApiKey = apps.get_model("accounts_app", "ApiKey")
    for user in User.objects.filter(personal_project__isnull=True).iterator():
        project = Project.objects.create(id="proj_" + secrets.token_hex(12), name=user.username, personal_user=user)
        Membership.objects.create(project=project, user=user, role="owner")
    for project in Project.objects.filter(personal_user__isnull=False).iterator():
        ApiKey.objects.filter(user_id=project.personal_user_id, project__isnull=True).update(project=project)


class Migration(migrations.Migration):
    dependencies = [("accounts_app", "0003_projects"), migrations.swappable_dependency(settings.AUTH_USER_MODEL)]

    operations = [migrations.RunPython(personal_projects, migrations.RunPython.noop)]
