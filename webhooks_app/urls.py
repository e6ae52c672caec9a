from django.urls import path

from webhooks_app import views

app_name = "webhooks"
urlpatterns = [
    path("", views.webhook_list, name="list"),
    path("create/", views.webhook_create, name="create"),
    path("notifications/", views.notifications_update, name="notifications"),
    path("<str:webhook_id>/", views.webhook_detail, name="detail"),
    path("<str:webhook_id>/delete/", views.webhook_delete, name="delete"),
    path("<str:webhook_id>/test/", views.webhook_test, name="test"),
]
