from django.contrib import admin

from accounts_app import services
from accounts_app.forms import AdminLoginForm
from accounts_app.models import ApiKey, Membership, Project


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ("user",)


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    """Projects and their members (a personal project has its user only)."""

    list_display = ("id", "name", "personal_user", "created_at")
    search_fields = ("id", "name")
    readonly_fields = ("id", "personal_user", "created_at")
    inlines = [MembershipInline]


# The admin's login gets the same lockout as the site's.
admin.site.login_form = AdminLoginForm


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are listed by name and prefix only (the key itself is stored nowhere); they are created on
    the API keys page or with `manage.py issue_token`, and revoked here or there."""

    list_display = ("name", "user", "project", "shown_prefix", "created_at", "last_used_at", "expires_at", "status")
    list_filter = ("revoked_at", "expires_at")
    search_fields = ("name", "prefix", "user__username")
    fields = ("user", "project", "name", "shown_prefix", "created_at", "last_used_at", "expires_at", "revoked_at")
    readonly_fields = ("user", "project", "shown_prefix", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke"]

    @admin.display(description="Key")
    def shown_prefix(self, obj: ApiKey) -> str:
        return f"{obj.prefix}…"

    @admin.display(description="Status")
    def status(self, obj: ApiKey) -> str:
        return obj.status.label

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset) -> None:
        count = services.api_keys_revoke(keys=queryset)
        self.message_user(request, f"Revoked {count} key(s).")
