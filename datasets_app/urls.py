from django.urls import path

from datasets_app import views

app_name = "datasets"
urlpatterns = [
    path("", views.dataset_list, name="list"),
    path("upload/", views.dataset_upload, name="upload"),
    path("hub/", views.dataset_hub, name="hub"),
    path("<str:file_id>/", views.dataset_detail, name="detail"),
    path("<str:file_id>/stats/", views.dataset_stats_request, name="stats"),
    path("<str:file_id>/prepare/", views.dataset_prepare, name="prepare"),
    path("<str:file_id>/thumbnails/<int:index>.jpg", views.dataset_thumbnail, name="thumbnail"),
]
