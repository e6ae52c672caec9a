from django.contrib import admin

from models_app.models import (
    AliasChange,
    CompletionSettings,
    Evaluation,
    Export,
    FineTunedModel,
    ModelAlias,
    StoredCompletion,
)


@admin.register(FineTunedModel)
class FineTunedModelAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "name", "semver", "version", "base_model", "adapter", "job", "archived_at",
                    "created_at")
    list_filter = ("adapter", "base_model")
    search_fields = ("id", "name", "owner__username", "job__id")
    # archived_at and aliases change through the registry's services (model_archive, model_promote)
    # versions are given by the bump rule (services.registry.version_next) and never change; the card is edited
    # through services.model_card_edit, which keeps the adapter zip's README in step
    readonly_fields = ("id", "job", "adapter", "adapter_path", "artifact_files", "archived_at", "promotion",
                       "version", "major", "minor", "patch", "card", "card_edited_at", "created_at")


@admin.register(Evaluation)
class EvaluationAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "model", "base_model", "dataset", "kind", "status", "created_at")
    list_filter = ("status", "kind")
    search_fields = ("id", "model__id", "owner__username")
    readonly_fields = ("status", "progress", "metrics", "rows", "error", "finished_at")


@admin.register(ModelAlias)
class ModelAliasAdmin(admin.ModelAdmin):
    list_display = ("name", "alias", "model", "owner", "updated_at")
    search_fields = ("name", "alias", "owner__username")
    # moved only by promote and rollback, which keep the alias history
    readonly_fields = ("owner", "name", "alias", "model")


@admin.register(AliasChange)
class AliasChangeAdmin(admin.ModelAdmin):
    list_display = ("name", "alias", "action", "model", "previous", "owner", "created_at")
    list_filter = ("action",)
    readonly_fields = ("name", "alias", "action", "model", "previous", "owner")


@admin.register(Export)
class ExportAdmin(admin.ModelAdmin):
    list_display = ("id", "model", "kind", "quantization", "status", "size_bytes", "created_at")
    list_filter = ("kind", "status")
    readonly_fields = ("status", "progress", "storage_path", "size_bytes", "verification", "error", "finished_at")


@admin.register(StoredCompletion)
class StoredCompletionAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "model", "model_version", "rating", "source", "created_at", "expires_at")
    list_filter = ("source", "rating")
    search_fields = ("id", "model", "model_version", "owner__username")
    # what was served stays as served: the owner rates and corrects through the data loop's services
    readonly_fields = ("id", "owner", "model", "model_version", "messages", "choices", "usage", "request", "source",
                       "datasets", "created_at")


@admin.register(CompletionSettings)
class CompletionSettingsAdmin(admin.ModelAdmin):
    list_display = ("owner", "retention_days")
