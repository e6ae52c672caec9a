from django.contrib import admin

from models_app.base_models.models import BaseModel


@admin.register(BaseModel)
class BaseModelAdmin(admin.ModelAdmin):
    list_display = ("name", "source", "family", "parameters", "context_length")
    list_filter = ("family",)
    search_fields = ("name", "source")
