from django.urls import path

from jobs_app import views

app_name = "jobs"
urlpatterns = [
    path("", views.job_list, name="list"),
    path("new/", views.wizard_dataset, name="wizard_dataset"),
    path("new/model/", views.wizard_model, name="wizard_model"),
    path("new/model/check/<str:name>/", views.wizard_field, name="wizard_field"),
    path("new/model/grader/", views.wizard_grader_try, name="wizard_grader_try"),
    path("new/review/", views.wizard_review, name="wizard_review"),
    path("<str:job_id>/", views.job_detail, name="detail"),
    path("<str:job_id>/cancel/", views.job_cancel, name="cancel"),
    path("<str:job_id>/pause/", views.job_pause, name="pause"),
    path("<str:job_id>/resume/", views.job_resume, name="resume"),
    path("<str:job_id>/misclassified/<int:index>/", views.job_misclassified_thumbnail, name="misclassified"),
]
