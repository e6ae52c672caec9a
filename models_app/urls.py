from django.urls import path

from models_app import views

app_name = "models"
urlpatterns = [
    path("", views.model_list, name="list"),
    path("<path:model_id>/", views.model_detail, name="detail"),
]
