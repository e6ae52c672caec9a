from django.contrib import admin

from webhooks_app.models import NotificationPreference, WebhookDelivery, WebhookEndpoint


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "url", "created_at")
    exclude = ("secret",)
    readonly_fields = ("owner", "url", "events", "created_at")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ("id", "event_type", "event_id", "channel", "target", "status", "attempts", "created_at")
    list_filter = ("status", "channel", "event_type")
    readonly_fields = [field.name for field in WebhookDelivery._meta.fields]


@admin.register(NotificationPreference)
class NotificationPreferenceAdmin(admin.ModelAdmin):
    list_display = ("user", "email", "slack_url")
