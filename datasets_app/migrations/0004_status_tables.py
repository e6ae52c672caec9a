import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def quality_status_from_report(apps, schema_editor):
    Dataset = apps.get_model("datasets_app", "Dataset")
    for dataset in Dataset.objects.exclude(quality={}):
        report = dict(dataset.quality)
        status = report.pop("status", "")
        Dataset.objects.filter(pk=dataset.pk).update(quality_status=status, quality=report)


def token_stats_forget(apps, schema_editor):
    # A cache, now kept per owner: counted again on demand.
    apps.get_model("datasets_app", "TokenStats").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("datasets_app", "0003_upload_hash_state"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]
    operations = [
        migrations.AddField(
            model_name="dataset", name="quality_status",
            field=models.CharField(blank=True, choices=[("", "not computed"), ("computing", "Computing"),
                                                        ("ready", "Ready"), ("failed", "Failed")],
                                   default="", max_length=20),
        ),
        migrations.RunPython(quality_status_from_report, migrations.RunPython.noop),
        migrations.RunPython(token_stats_forget, migrations.RunPython.noop),
        migrations.RemoveConstraint(model_name="tokenstats", name="token_stats_key_unique"),
        migrations.AddField(
            model_name="tokenstats", name="owner",
            field=models.ForeignKey(default=None, on_delete=django.db.models.deletion.CASCADE, related_name="+",
                                    to=settings.AUTH_USER_MODEL),
            preserve_default=False,
        ),
        migrations.AddConstraint(
            model_name="tokenstats",
            constraint=models.UniqueConstraint(fields=("owner", "sha256", "options_key", "tokenizer", "template"),
                                               name="token_stats_owner_key_unique"),
        ),
    ]
