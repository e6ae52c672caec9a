from django.db import migrations, models


class Migration(migrations.Migration):
    """The job's ``method`` is its objective (supervised, dpo): one word, one meaning."""

    dependencies = [("jobs_app", "0008_base_model_app")]
    operations = [
        migrations.RenameField(model_name="finetunejob", old_name="method", new_name="objective"),
        migrations.AlterField(
            model_name="finetunejob", name="objective",
            field=models.CharField(choices=[("supervised", "Supervised"), ("dpo", "Dpo")], default="supervised",
                                   max_length=20),
        ),
    ]
