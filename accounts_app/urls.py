from django.contrib.auth import views as auth_views
from django.urls import path

from accounts_app import views

app_name = "accounts"
urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("tokens/", views.tokens, name="tokens"),
    path("tokens/create/", views.token_create, name="token_create"),
    path("tokens/<int:key_id>/revoke/", views.token_revoke, name="token_revoke"),
    path("projects/", views.projects, name="projects"),
    path("projects/switch/", views.project_switch, name="project_switch"),
    path("projects/create/", views.project_create, name="project_create"),
    path("projects/<str:project_id>/members/add/", views.member_add, name="member_add"),
    path("projects/<str:project_id>/members/<int:user_id>/remove/", views.member_remove, name="member_remove"),
]
