from django.urls import path

from pipelines_app import views

app_name = "pipelines"
urlpatterns = [
    path("", views.pipeline_list, name="list"),
    path("<str:pipeline_id>/", views.pipeline_detail, name="detail"),
]
