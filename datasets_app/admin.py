from django.contrib import admin

from datasets_app.models import Dataset


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ("id", "filename", "owner", "format", "status", "row_count", "byte_size", "created_at")
    list_filter = ("status", "format", "purpose")
    search_fields = ("id", "filename", "owner__username", "sha256")
    readonly_fields = ("id", "sha256", "byte_size", "row_count", "validation_report", "created_at")
    date_hierarchy = "created_at"
