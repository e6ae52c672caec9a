from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("datasets_app", "0004_status_tables")]
    operations = [migrations.AlterModelOptions(name="tokenstats", options={"verbose_name_plural": "token statistics"})]
