"""Register the built-in tiny-llama so a fresh database knows it (its files are built on first use)."""

from django.db import migrations

# Frozen copies: a data migration must not change when the code it came from does.
TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|end|>' }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def register(apps, schema_editor):
    BaseModel = apps.get_model("models_app", "BaseModel")
    BaseModel.objects.get_or_create(
        name="tiny-llama",
        defaults={"source": "builtin:tiny-llama", "family": "llama", "chat_template": TEMPLATE,
                  "context_length": 2048, "parameters": 3_044_864},
    )


def unregister(apps, schema_editor):
    apps.get_model("models_app", "BaseModel").objects.filter(name="tiny-llama", jobs=None).delete()


class Migration(migrations.Migration):
    dependencies = [("models_app", "0001_initial")]
    operations = [migrations.RunPython(register, unregister)]
