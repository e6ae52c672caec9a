import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("models_app", "0004_registry_and_evaluations"),
        ("base_models", "0001_initial"),
        ("jobs_app", "0008_base_model_app"),
    ]
    operations = [
        # BaseModel now belongs to the base_models app; its table stays where it was.
        migrations.SeparateDatabaseAndState(state_operations=[
            migrations.AlterField(
                model_name="finetunedmodel", name="base_model",
                field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="fine_tuned",
                                        to="base_models.basemodel"),
            ),
            migrations.AlterField(
                model_name="evaluation", name="base_model",
                field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="evaluations",
                                        to="base_models.basemodel"),
            ),
            migrations.DeleteModel(name="BaseModel"),
        ]),
    ]
