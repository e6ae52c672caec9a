from django.urls import path

from models_app import views

app_name = "models"
urlpatterns = [
    path("", views.model_list, name="list"),
    path("playground/", views.playground, name="playground"),  # before the catch-all model id
    path("<path:model_id>/", views.model_detail, name="detail"),
]
