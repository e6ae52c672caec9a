from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("models_app", "0007_model_aliases_name")]
    operations = [
        migrations.AddField(model_name="evaluation", name="started_at",
                            field=models.DateTimeField(blank=True, help_text="When a worker began scoring.", null=True)),
    ]
