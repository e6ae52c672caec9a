from django.contrib import admin, messages
from django.db.models import Count
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from finetune_site.errors import Conflict
from jobs_app import services
from jobs_app.models import Checkpoint, FineTuneJob, JobEvent, Provider, Quota, Worker
from jobs_app.selectors import worker_is_alive


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


EVENTS_SHOWN = 20


class CheckpointInline(ReadOnlyInline):
    model = Checkpoint
    fields = ("step", "storage_path", "metrics", "created_at")
    readonly_fields = fields


@admin.register(FineTuneJob)
class FineTuneJobAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "base_model", "dataset", "status", "attempt", "trained_tokens", "created_at")
    list_filter = ("status", "objective", "base_model")
    search_fields = ("id", "owner__username", "dataset__id", "dataset__filename", "suffix")
    date_hierarchy = "created_at"
    # status changes only through job_transition (the cancel action), never by editing.
    readonly_fields = ("id", "status", "attempt", "error", "trained_tokens", "event_seq",
                       "created_at", "started_at", "finished_at", "event_history", "provider", "remote_job_id",
                       "remote_files", "remote_model", "cost")
    inlines = [CheckpointInline]

    @admin.display(description="Event history")
    def event_history(self, job: FineTuneJob) -> str:
        """Counts by type and the last few messages; the whole history is a paginated list away
        (thousands of metric events inline made this page tens of thousands of pixels tall)."""
        counts = dict(job.events.values_list("type").annotate(n=Count("id")).values_list("type", "n"))
        latest = job.events.exclude(type=JobEvent.Type.METRICS).order_by("-seq")[:EVENTS_SHOWN]
        url = reverse("admin:jobs_app_jobevent_changelist") + f"?job__id__exact={job.id}"
        return format_html(
            "<p>{} messages, {} metric points. <a href='{}'>All {} events, paginated →</a></p><ol>{}</ol>",
            counts.get(JobEvent.Type.MESSAGE, 0), counts.get(JobEvent.Type.METRICS, 0), url, sum(counts.values()),
            format_html_join("", "<li>#{} {} {}</li>", ((e.seq, e.level, e.message) for e in reversed(latest))))
    actions = ["cancel_jobs"]

    @admin.action(description="Cancel selected jobs")
    def cancel_jobs(self, request, queryset):
        cancelled = 0
        for job in queryset:
            try:
                services.job_cancel(job=job)
                cancelled += 1
            except Conflict as exc:
                self.message_user(request, exc.message, level=messages.WARNING)
        self.message_user(request, f"Cancelled {cancelled} job(s).")


@admin.register(JobEvent)
class JobEventAdmin(admin.ModelAdmin):
    list_display = ("job", "seq", "level", "type", "message", "created_at")
    list_filter = ("level", "type")
    search_fields = ("job__id", "message")
    list_per_page = 100
    ordering = ("job", "seq")

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Checkpoint)
class CheckpointAdmin(admin.ModelAdmin):
    list_display = ("id", "job", "step", "storage_path", "created_at")
    search_fields = ("job__id",)


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    """Providers are added through POST /v1/providers (the service seals the key); here they are listed
    and, when no job names them, deleted. The sealed key is never shown."""

    list_display = ("name", "kind", "base_url", "owner", "api_key_hint", "created_at")
    search_fields = ("name", "base_url", "owner__username")
    exclude = ("api_key_sealed",)
    readonly_fields = ("id", "name", "kind", "base_url", "owner", "api_key_hint", "created_at")

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(Quota)
class QuotaAdmin(admin.ModelAdmin):
    """An account's limits and priority (README "Teams and quotas"); empty limits are none, zero is refused."""

    list_display = ("project", "max_concurrent_jobs", "gpu_hours_per_month", "tokens_per_month", "priority",
                    "updated_at")
    search_fields = ("project__id", "project__name")
    autocomplete_fields = ("project",)


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    """Training workers as they registered; one not seen for 3 × ``WORKER_HEARTBEAT_SECONDS`` shows as not
    alive (killed without stopping, or its host lost) and is not counted for jobs. Deleting a row forgets
    the worker until it starts again (its beats only update its row)."""

    list_display = ("name", "kind", "capacity", "started_at", "last_seen", "alive")
    search_fields = ("name",)
    readonly_fields = ("name", "devices", "started_at", "last_seen")

    def has_add_permission(self, request) -> bool:
        return False

    @admin.display(description="kind")
    def kind(self, worker: Worker) -> str:
        return worker.devices.get("kind", "cpu")

    @admin.display(boolean=True, description="alive")
    def alive(self, worker: Worker) -> bool:
        return worker_is_alive(worker)
