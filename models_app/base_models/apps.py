from django.apps import AppConfig


class BaseModelsConfig(AppConfig):
    name = "models_app.base_models"
    label = "base_models"
    verbose_name = "Base models"
    default_auto_field = "django.db.models.BigAutoField"
