"""Model cards: generated with the version, refreshed by evaluations, edited through the API and the page,
shown safely on the model page, and carried by every download and export."""

import io
import zipfile

import pytest

from models_app.cards import EVALUATIONS_END, EVALUATIONS_START
from models_app.services import (
    evaluation_create,
    evaluation_run,
    export_create,
    export_run,
    fine_tuned_model_create,
    model_card_readme_store,
)
from tests.api import api_client
from tests.factories import make_dataset, make_job, make_user
from workers.sample_data import classification_rows

pytestmark = pytest.mark.django_db


@pytest.fixture
def model(base_model, trained_adapter):
    owner = make_user("alice")
    job = make_job(owner, suffix="topics", hyperparameters={"n_epochs": 2})
    return fine_tuned_model_create(job=job, adapter_dir=trained_adapter)


def _card_url(model) -> str:
    return f"/v1/registry/models/{model.id}/card"


def _zip_names_and_readme(content: bytes, folder: str) -> tuple[set[str], str]:
    archive = zipfile.ZipFile(io.BytesIO(content))
    return set(archive.namelist()), archive.read(f"{folder}/README.md").decode()


def test_generated_card_names_base_data_objective_hyperparameters_use_and_limits(model):
    dataset = model.job.dataset
    card = api_client(model.owner).get(_card_url(model)).json()
    assert (card["object"], card["version"], card["edited_at"]) == ("model.card", "1.0.0", None)
    text = card["card"]
    assert text.startswith("# topics 1.0.0\n")
    assert "## Base model\n\n`tiny-llama` (llama)." in text
    assert f"| training | {dataset.filename} (`{dataset.id}`) | 16 | `{dataset.sha256}` |" in text
    assert "- Objective: `supervised`" in text and f"- Adapter: `{model.adapter}`" in text
    assert "| n_epochs | 2 |" in text and "| learning_rate |" in text
    assert f"{EVALUATIONS_START}\n## Evaluation\n\nNo evaluation has finished yet.\n\n{EVALUATIONS_END}" in text
    assert "## Intended use" in text and "## Limitations" in text


def test_a_finished_evaluation_fills_the_cards_evaluation_table(model):
    validation = make_dataset(model.owner, rows=classification_rows(8, seed=5), name="valid.jsonl")
    evaluation = evaluation_create(owner=model.owner, model=model, dataset=validation, max_rows=4, max_new_tokens=2)
    evaluation_run(evaluation_id=evaluation.id)
    model.refresh_from_db()
    assert f"On `valid.jsonl` (4 rows, on demand, `{evaluation.id}`):" in model.card
    assert "| Metric | base | tuned | Change |" in model.card
    assert "| validation loss |" in model.card and "No evaluation has finished yet." not in model.card


def test_api_edits_the_card_and_an_edit_keeps_its_text_when_evaluations_refresh(model):
    from models_app.cards import model_card_with_evaluations

    client = api_client(model.owner)
    edited = f"# Topics\n\nFor sorting support tickets.\n\n{EVALUATIONS_START}\nold\n{EVALUATIONS_END}\n"
    response = client.put(_card_url(model), {"card": edited}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["card"] == edited and response.json()["edited_at"]
    patched = client.patch(_card_url(model), {"card": edited + "\nMore.\n"}, format="json")
    assert patched.status_code == 200 and client.get(_card_url(model)).json()["card"].endswith("More.\n")

    model.refresh_from_db()
    refreshed = model_card_with_evaluations(model.card, f"{EVALUATIONS_START}\nnew\n{EVALUATIONS_END}")
    assert refreshed.startswith("# Topics\n\nFor sorting support tickets.") and "\nnew\n" in refreshed
    assert "old" not in refreshed


@pytest.mark.parametrize("body", [{"card": ""}, {"card": "   "}, {}, {"card": "x" * 100_001}])
def test_api_refuses_an_empty_or_huge_card_naming_the_param(model, body):
    response = api_client(model.owner).put(_card_url(model), body, format="json")
    assert response.status_code == 400 and response.json()["error"]["param"] == "card"


def test_another_users_card_is_404(model):
    stranger = api_client(make_user())
    assert stranger.get(_card_url(model)).status_code == 404
    assert stranger.put(_card_url(model), {"card": "mine"}, format="json").status_code == 404


def test_model_page_renders_the_card_escaping_html_and_saves_an_edit(model, client):
    client.force_login(model.owner)
    page = client.get(f"/models/{model.id}/").content.decode()
    assert '<article class="model-card" id="model-card"><h1>topics 1.0.0</h1>' in page
    assert "<th>Rows</th>" in page and f"<code>{model.job.dataset.sha256}</code>" in page

    hostile = "# Mine\n\n<script>alert(1)</script>\n\n[click](javascript:alert(1)) **bold**\n"
    response = client.post(f"/models/{model.id}/card/", {"card": hostile})
    assert response.status_code == 302
    page = client.get(f"/models/{model.id}/").content.decode()
    card = page.split('id="model-card">', 1)[1].split("</article>", 1)[0]
    assert "<h1>Mine</h1>" in card and "<strong>bold</strong>" in card
    assert "<script>" not in card and "&lt;script&gt;alert(1)&lt;/script&gt;" in card
    assert 'href="javascript:' not in card
    assert "Model card of topics@1.0.0 saved" in page


def test_adapter_download_carries_the_card_and_follows_an_edit(model, django_capture_on_commit_callbacks):
    client = api_client(model.owner)

    def download() -> tuple[set[str], str]:
        response = client.get(f"/v1/models/{model.id}/download", {"artifact": "adapter"})
        return _zip_names_and_readme(b"".join(response.streaming_content), "adapter")

    names, readme = download()
    assert "adapter/adapter_model.safetensors" in names and readme == model.card
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        client.put(_card_url(model), {"card": "# Edited card\n"}, format="json")
    assert len(callbacks) == 1  # the zip is rewritten by a task
    model_card_readme_store(model_id=model.id)  # what the task runs
    names, readme = download()
    assert readme == "# Edited card\n" and "adapter/adapter_model.safetensors" in names


@pytest.mark.parametrize("kind", ["adapter", "merged"])
def test_exports_carry_the_current_card_as_readme(model, kind):
    api_client(model.owner).put(_card_url(model), {"card": "# Topics card\n\nExported.\n"}, format="json")
    export = export_run(export_id=export_create(model=model, kind=kind).id)
    assert export.status == "verified", export.error
    response = api_client(model.owner).get(f"/v1/models/{model.id}/download", {"artifact": kind})
    names, readme = _zip_names_and_readme(b"".join(response.streaming_content), kind)
    assert readme == "# Topics card\n\nExported.\n"
    assert f"{kind}/config.json" in names or f"{kind}/adapter_config.json" in names


def test_gguf_export_carries_the_card_as_its_description(model, tmp_path):
    import gguf

    export = export_run(export_id=export_create(model=model, kind="gguf", quantization="f32").id)
    assert export.status == "verified", export.error
    response = api_client(model.owner).get(f"/v1/models/{model.id}/download", {"artifact": "gguf-f32"})
    path = tmp_path / "model.gguf"
    path.write_bytes(b"".join(response.streaming_content))
    field = gguf.GGUFReader(str(path)).fields["general.description"]
    assert field.contents() == model.card
