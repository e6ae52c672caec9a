from django.urls import path

from models_app import views

app_name = "models"
urlpatterns = [
    path("", views.model_list, name="list"),
    path("playground/", views.playground, name="playground"),  # before the catch-all model id
    path("completions/", views.completion_list, name="completions"),
    path("completions/dataset/", views.completions_dataset, name="completions_dataset"),
    path("completions/import/", views.completions_import, name="completions_import"),
    path("completions/settings/", views.completion_settings, name="completions_settings"),
    path("completions/<str:completion_id>/feedback/", views.completion_feedback, name="completion_feedback"),
    path("registry/<str:name>/", views.registry_detail, name="registry"),
    path("registry/<str:name>/rollback/", views.registry_rollback, name="rollback"),
    path("evaluations/<str:evaluation_id>/", views.evaluation_detail, name="evaluation"),
    path("<path:model_id>/promote/", views.model_promote, name="promote"),
    path("<path:model_id>/archive/", views.model_archive, name="archive"),
    path("<path:model_id>/export/", views.model_export, name="export"),
    path("<path:model_id>/delete/", views.model_delete, name="delete"),
    path("<path:model_id>/card/", views.model_card_edit, name="card"),
    path("<path:model_id>/evaluate/", views.model_evaluate, name="evaluate"),
    path("<path:model_id>/classify/", views.model_classify, name="classify"),
    path("<path:model_id>/", views.model_detail, name="detail"),
]
