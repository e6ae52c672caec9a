from django.urls import path

from sweeps_app import views

app_name = "sweeps"
urlpatterns = [
    path("", views.sweep_list, name="list"),
    path("<str:sweep_id>/", views.sweep_detail, name="detail"),
    path("<str:sweep_id>/cancel/", views.sweep_cancel, name="cancel"),
    path("<str:sweep_id>/promote-best/", views.sweep_promote_best, name="promote_best"),
]
