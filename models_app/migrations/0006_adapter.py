from django.db import migrations, models


class Migration(migrations.Migration):
    """A fine-tuned model's ``method`` was its adapter (lora, qlora, full): named so now."""

    dependencies = [("models_app", "0005_base_model_app")]
    operations = [
        migrations.RenameField(model_name="finetunedmodel", old_name="method", new_name="adapter"),
        migrations.AlterField(
            model_name="finetunedmodel", name="adapter",
            field=models.CharField(help_text="lora, qlora or full (workers.hyperparameters).", max_length=20),
        ),
    ]
