from django.contrib import admin

from datasets_app.models import Dataset, DatasetUpload, TokenStats


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ("id", "filename", "owner", "format", "container", "status", "row_count", "byte_size", "parent",
                    "created_at")
    list_filter = ("status", "format", "container", "purpose")
    search_fields = ("id", "filename", "owner__username", "sha256")
    readonly_fields = ("id", "status", "progress", "sha256", "byte_size", "row_count", "container", "format",
                       "options", "validation_report", "stats", "quality", "quality_status", "parent", "operations",
                       "duplicate_of", "training_file", "created_at", "validated_at")
    date_hierarchy = "created_at"


@admin.register(DatasetUpload)
class DatasetUploadAdmin(admin.ModelAdmin):
    list_display = ("id", "filename", "owner", "status", "received", "expected_bytes", "dataset", "created_at")
    list_filter = ("status",)
    search_fields = ("id", "filename", "owner__username", "expected_sha256")
    readonly_fields = ("id", "status", "received", "dataset", "created_at", "updated_at")


@admin.register(TokenStats)
class TokenStatsAdmin(admin.ModelAdmin):
    list_display = ("sha256", "tokenizer", "template", "status", "rows", "sampled", "created_at")
    list_filter = ("status", "template")
    search_fields = ("sha256", "tokenizer")
    exclude = ("totals", "targets")
    readonly_fields = ("owner", "sha256", "options_key", "tokenizer", "template", "status", "rows", "stride", "sampled",
                       "structure", "errors", "error", "created_at", "updated_at")
