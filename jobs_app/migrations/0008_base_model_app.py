import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("jobs_app", "0007_evaluation_options"),
        ("base_models", "0001_initial"),
    ]
    operations = [
        # The table did not move: only Django's idea of which app owns the model did.
        migrations.SeparateDatabaseAndState(state_operations=[
            migrations.AlterField(
                model_name="finetunejob", name="base_model",
                field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="jobs",
                                        to="base_models.basemodel"),
            ),
        ]),
    ]
