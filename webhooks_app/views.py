from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from finetune_site.errors import InvalidRequest
from webhooks_app import selectors, services
from webhooks_app.forms import NotificationForm, WebhookCreateForm


def _webhooks_page(request, *, form=None, notification_form=None, new_endpoint=None, status: int = 200):
    preference = selectors.notification_preference_of(request.user)
    notification_form = notification_form or NotificationForm(initial={
        "email": preference.email, "slack_url": preference.slack_url, "events": preference.events})
    return render(request, "webhooks_app/webhook_list.html", {
        "endpoints": selectors.endpoints_visible_to(request.user), "form": form or WebhookCreateForm(),
        "notification_form": notification_form, "new_endpoint": new_endpoint,
        "notices": selectors.notices_of(request.user)[:20]}, status=status)


@login_required
def webhook_list(request):
    return _webhooks_page(request)


@never_cache  # the one response that shows the secret next to its creation
@require_POST
@login_required
def webhook_create(request):
    form = WebhookCreateForm(request.POST)
    if not form.is_valid():
        return _webhooks_page(request, form=form, status=400)
    try:
        endpoint = services.webhook_create(owner=request.user, url=form.cleaned_data["url"],
                                           events=form.cleaned_data["events"])
    except InvalidRequest as error:
        form.add_error("url" if error.param == "url" else None, error.message)
        return _webhooks_page(request, form=form, status=400)
    return _webhooks_page(request, new_endpoint=endpoint, status=201)


@login_required
def webhook_detail(request, webhook_id: str):
    endpoint = selectors.endpoint_get(request.user, webhook_id)
    context = {"endpoint": endpoint, "deliveries": selectors.deliveries_of(endpoint)[:100]}
    if request.htmx:
        return render(request, "webhooks_app/partials/delivery_table.html", context)
    return render(request, "webhooks_app/webhook_detail.html", context)


@require_POST
@login_required
def webhook_delete(request, webhook_id: str):
    endpoint = selectors.endpoint_get(request.user, webhook_id)
    services.webhook_delete(endpoint=endpoint)
    messages.success(request, f"Deleted the webhook to {endpoint.url}")
    return redirect("webhooks:list")


@require_POST
@login_required
def webhook_test(request, webhook_id: str):
    endpoint = selectors.endpoint_get(request.user, webhook_id)
    delivery = services.webhook_test_send(endpoint=endpoint)
    messages.success(request, f"Test event {delivery.event_id} queued: its delivery appears below")
    return redirect("webhooks:detail", webhook_id=endpoint.id)


@require_POST
@login_required
def notifications_update(request):
    form = NotificationForm(request.POST)
    if not form.is_valid():
        return _webhooks_page(request, notification_form=form, status=400)
    try:
        services.notification_preference_update(user=request.user, **form.cleaned_data)
    except InvalidRequest as error:
        form.add_error(error.param if error.param in form.fields else None, error.message)
        return _webhooks_page(request, notification_form=form, status=400)
    messages.success(request, "Notification preferences saved")
    return redirect("webhooks:list")
