"""The webhooks API: endpoints (create, list, retrieve, delete), their deliveries and a test send."""

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from finetune_site.errors import InvalidRequest
from finetune_site.pagination import cursor_page
from webhooks_app import selectors, services
from webhooks_app.models import EVENT_TYPES, WebhookDelivery, WebhookEndpoint


def _ts(value) -> int | None:
    return int(value.timestamp()) if value else None


def endpoint_object(endpoint: WebhookEndpoint, *, secret: bool = False) -> dict:
    body = {"object": "webhook_endpoint", "id": endpoint.id, "url": endpoint.url, "events": endpoint.events,
            "created_at": _ts(endpoint.created_at)}
    return {**body, "secret": endpoint.secret} if secret else body


def delivery_object(delivery: WebhookDelivery) -> dict:
    return {"object": "webhook_delivery", "id": str(delivery.pk), "webhook_id": delivery.endpoint_id,
            "event_id": delivery.event_id, "event_type": delivery.event_type, "status": delivery.status,
            "attempts": delivery.attempts, "response_status": delivery.response_status,
            "last_error": delivery.last_error or None, "created_at": _ts(delivery.created_at),
            "last_attempt_at": _ts(delivery.last_attempt_at), "delivered_at": _ts(delivery.delivered_at),
            "next_attempt_at": _ts(delivery.next_attempt_at) if delivery.status == "pending" else None,
            "payload": delivery.payload}


class WebhookCreateSerializer(serializers.Serializer):
    url = serializers.CharField(max_length=2000, help_text="http(s) URL that receives a signed POST per event.")
    events = serializers.ListField(child=serializers.CharField(), allow_empty=False,
                                   help_text="Event types: " + ", ".join(EVENT_TYPES))


EVENTS_DOC = "\n".join(f"- `{name}`: {text}" for name, text in EVENT_TYPES.items())


class WebhooksApi(APIView):
    @extend_schema(request=WebhookCreateSerializer, responses={200: dict}, summary="Create a webhook endpoint",
                   description="Returns the endpoint with its `secret` (`whsec_…`, Standard Webhooks): every "
                               "delivery carries `webhook-id`, `webhook-timestamp` and `webhook-signature` "
                               "headers signed with it. Events:\n\n" + EVENTS_DOC,
                   examples=[OpenApiExample("Job endings", value={
                       "url": "https://example.com/hooks/finetune",
                       "events": ["fine_tuning.job.succeeded", "fine_tuning.job.failed"]})])
    def post(self, request):
        form = WebhookCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        endpoint = services.webhook_create(owner=request.user, url=form.validated_data["url"],
                                           events=form.validated_data["events"])
        return Response(endpoint_object(endpoint, secret=True))

    @extend_schema(responses={200: dict}, summary="List your webhook endpoints, newest first")
    def get(self, request):
        return Response(cursor_page(request, selectors.endpoints_visible_to(request.user), endpoint_object))


class WebhookApi(APIView):
    @extend_schema(responses={200: dict}, summary="Retrieve a webhook endpoint (without its secret)")
    def get(self, request, webhook_id: str):
        return Response(endpoint_object(selectors.endpoint_get(request.user, webhook_id)))

    @extend_schema(responses={200: dict}, summary="Delete a webhook endpoint and its delivery log")
    def delete(self, request, webhook_id: str):
        services.webhook_delete(endpoint=selectors.endpoint_get(request.user, webhook_id))
        return Response({"object": "webhook_endpoint.deleted", "id": webhook_id, "deleted": True})


class WebhookDeliveriesApi(APIView):
    @extend_schema(responses={200: dict}, summary="List an endpoint's deliveries, newest first")
    def get(self, request, webhook_id: str):
        endpoint = selectors.endpoint_get(request.user, webhook_id)
        after = request.query_params.get("after")
        if after is not None and not after.isdigit():  # delivery ids are numbers
            raise InvalidRequest(f"after: no such delivery {after!r}", param="after")
        return Response(cursor_page(request, selectors.deliveries_of(endpoint), delivery_object))


class WebhookTestApi(APIView):
    @extend_schema(request=None, responses={200: dict}, summary="Send a test event to an endpoint",
                   description="A `webhook.test` event, signed and retried as any other; see its delivery.")
    def post(self, request, webhook_id: str):
        endpoint = selectors.endpoint_get(request.user, webhook_id)
        return Response(delivery_object(services.webhook_test_send(endpoint=endpoint)))
