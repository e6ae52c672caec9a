from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("models_app", "0006_adapter")]
    operations = [
        migrations.AlterModelOptions(name="modelalias",
                                     options={"ordering": ["name", "alias"], "verbose_name_plural": "model aliases"}),
    ]
