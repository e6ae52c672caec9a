from django.contrib import admin

from models_app.models import BaseModel, FineTunedModel


@admin.register(BaseModel)
class BaseModelAdmin(admin.ModelAdmin):
    list_display = ("name", "source", "family", "parameters", "context_length")
    list_filter = ("family",)
    search_fields = ("name", "source")


@admin.register(FineTunedModel)
class FineTunedModelAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "base_model", "method", "job", "created_at")
    list_filter = ("method", "base_model")
    search_fields = ("id", "name", "owner__username", "job__id")
    readonly_fields = ("id", "job", "adapter_path", "artifact_files", "created_at")
