"""The model pages: list and detail with metrics and the download link."""

import pytest
from django.urls import reverse

from models_app.models import FineTunedModel
from tests.factories import make_job, make_metric, make_user

pytestmark = pytest.mark.django_db


def _model(owner, base_model):
    job = make_job(owner, status="succeeded")
    make_metric(job, 5, 5, train_loss=0.25)
    return FineTunedModel.objects.create(id=f"ft:tiny-llama::{job.id[-6:]}", owner=job.owner, job=job,
                                         base_model=base_model, name="tiny-llama", method="lora",
                                         adapter_path="models/x/adapter", artifact_files=["models/x/adapter.zip"])


def test_list_shows_own_models_and_base_models(client, base_model):
    user = make_user()
    mine, theirs = _model(user, base_model), _model(make_user(), base_model)
    client.force_login(user)
    body = client.get(reverse("models:list")).content.decode()
    assert mine.id in body and theirs.id not in body and "builtin:tiny-llama" in body


def test_detail_shows_metrics_hyperparameters_and_download(client, base_model):
    user = make_user()
    model = _model(user, base_model)
    client.force_login(user)
    body = client.get(reverse("models:detail", args=[model.id])).content.decode()
    assert f'href="/v1/models/{model.id}/download?artifact=adapter"' in body
    assert "<th scope=\"row\">train_loss</th><td>0.25</td>" in body and "lora_r" in body
    assert model.job.dataset.filename in body


def test_other_users_model_is_404(client, base_model):
    model = _model(make_user(), base_model)
    client.force_login(make_user())
    assert client.get(reverse("models:detail", args=[model.id])).status_code == 404
