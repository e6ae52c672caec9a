"""The pipeline page draws the run's steps as an SVG graph with each status, and refreshes while it runs."""

import pytest

from pipelines_app.services import pipeline_advance, pipeline_create
from tests.factories import make_dataset, make_user
from tests.pipelines_app.test_running import _recipe

pytestmark = pytest.mark.django_db


@pytest.fixture
def pipeline(base_model):
    owner = make_user()
    pipeline = pipeline_create(owner=owner, recipe=_recipe(make_dataset(owner).id))
    pipeline_advance(run_id=pipeline.runs.get().id)
    return pipeline


def test_page_draws_each_step_with_its_status_and_links_its_object(client, pipeline):
    client.force_login(pipeline.owner)
    html = client.get(f"/pipelines/{pipeline.id}/").content.decode()
    assert "<svg" in html and html.count("<line ") == 2  # clean → train → export
    assert 'data-step="clean" data-status="succeeded"' in html
    assert 'data-step="train" data-status="running"' in html
    assert 'data-step="export" data-status="pending"' in html
    job_id = pipeline.runs.get().steps.get(step_id="train").object_id
    assert f'href="/jobs/{job_id}/"' in html
    assert 'hx-trigger="every 3s"' in html  # live while the run is going


def test_htmx_gets_the_graph_partial_only(client, pipeline):
    client.force_login(pipeline.owner)
    response = client.get(f"/pipelines/{pipeline.id}/", HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="run-dag"') and "<html" not in html


def test_list_shows_own_pipelines_and_another_users_page_is_404(client, pipeline):
    client.force_login(pipeline.owner)
    assert pipeline.id in client.get("/pipelines/").content.decode()
    client.force_login(make_user())
    assert pipeline.id not in client.get("/pipelines/").content.decode()
    assert client.get(f"/pipelines/{pipeline.id}/").status_code == 404
