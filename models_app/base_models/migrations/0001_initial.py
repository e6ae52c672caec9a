"""BaseModel moves here from models_app: the same table, now owned by the ``base_models`` app."""

from django.db import migrations, models


def content_type_move(apps, schema_editor):
    apps.get_model("contenttypes", "ContentType").objects.filter(app_label="models_app", model="basemodel").update(
        app_label="base_models")


def content_type_back(apps, schema_editor):
    apps.get_model("contenttypes", "ContentType").objects.filter(app_label="base_models", model="basemodel").update(
        app_label="models_app")


class Migration(migrations.Migration):
    initial = True
    dependencies = [
        ("models_app", "0004_registry_and_evaluations"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[
            migrations.CreateModel(
                name="BaseModel",
                fields=[
                    ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                    ("name", models.CharField(help_text="The id callers use, e.g. tiny-llama.", max_length=200,
                                              unique=True)),
                    ("source", models.CharField(help_text="builtin:NAME, an absolute local path, or a hub id like "
                                                          "org/model.", max_length=500)),
                    ("family", models.CharField(default="llama", max_length=50)),
                    ("chat_template", models.TextField(blank=True, help_text="Empty: the tokenizer's own template.")),
                    ("parameters", models.PositiveBigIntegerField(blank=True, null=True)),
                    ("context_length", models.PositiveIntegerField(default=2048)),
                    ("created_at", models.DateTimeField(auto_now_add=True)),
                ],
                options={"ordering": ["name"], "db_table": "models_app_basemodel"},
            ),
        ]),
        migrations.RunPython(content_type_move, content_type_back),
    ]
