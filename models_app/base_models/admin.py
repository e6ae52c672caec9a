from django.contrib import admin

from models_app.base_models.models import BaseModel


@admin.register(BaseModel)
class BaseModelAdmin(admin.ModelAdmin):
    """An operator shares a base model (owner empty) or edits its name; what the worker read from the
    model's files, and its status, change only by registering it again."""

    list_display = ("name", "owner", "status", "architecture", "parameters", "context_length")
    list_filter = ("status", "family")
    search_fields = ("name", "source")
    readonly_fields = ("status", "error", "local_path", "architecture", "family", "parameters", "context_length",
                       "dtype", "size_bytes", "license", "shape", "created_at", "checked_at")
