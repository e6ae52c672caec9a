from django.urls import path

from models_app.base_models import views

app_name = "base_models"
urlpatterns = [
    path("", views.base_model_list, name="list"),
    path("register/", views.base_model_register, name="register"),
    path("<path:name>/", views.base_model_detail, name="detail"),
]
