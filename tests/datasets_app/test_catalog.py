"""The dataset catalog: the owner names, describes and tags a dataset; lists filter by purpose, status,
name and tag, in the API and on the datasets page."""

import pytest
from django.urls import reverse

from datasets_app.models import Dataset
from tests.api import api_client
from tests.factories import make_dataset, make_user

pytestmark = pytest.mark.django_db


def _patch(client, dataset_id: str, body: dict):
    return client.patch(f"/v1/datasets/{dataset_id}", body, format="json")


def test_owner_names_describes_and_tags_a_dataset():
    dataset = make_dataset()
    response = _patch(
        api_client(dataset.owner),
        dataset.id,
        {"name": "Support chats", "description": "From March.", "tags": ["Support", "v2", "support"]},
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["name"], body["description"], body["tags"]) == ("Support chats", "From March.", ["support", "v2"])
    dataset.refresh_from_db()
    assert (dataset.name, dataset.tags) == ("Support chats", ["support", "v2"])
    # a field not sent stays as it was
    assert _patch(api_client(dataset.owner), dataset.id, {"tags": []}).json()["name"] == "Support chats"


def test_another_users_dataset_is_404_and_unchanged():
    dataset = make_dataset()
    response = _patch(api_client(make_user()), dataset.id, {"name": "mine now"})
    assert response.status_code == 404
    dataset.refresh_from_db()
    assert dataset.name == ""


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tags": "pets"}, "tags"),
        ({"tags": ["has space"]}, "tags"),
        ({"tags": ["x" * 41]}, "tags"),
        ({"tags": [f"t{i}" for i in range(21)]}, "tags"),
        ({"tags": [3]}, "tags"),
        ({"name": "n" * 201}, "name"),
        ({"description": ["not text"]}, "description"),
        ({"nmae": "a typo"}, "nmae"),
    ],
)
def test_bad_catalog_field_is_400_naming_it_and_stores_nothing(body, param):
    dataset = make_dataset()
    response = _patch(api_client(dataset.owner), dataset.id, {"name": "kept", **body} if param != "name" else body)
    assert response.status_code == 400 and response.json()["error"]["param"] == param
    dataset.refresh_from_db()
    assert (dataset.name, dataset.tags) == ("", [])


def _catalog() -> tuple:
    owner = make_user()
    pets = make_dataset(owner, name="pets.jsonl")
    Dataset.objects.filter(pk=pets.pk).update(name="Pet photos", tags=["pets", "v2"], purpose="vision")
    chats = make_dataset(owner, name="chats.jsonl")
    Dataset.objects.filter(pk=chats.pk).update(tags=["support"])
    broken = make_dataset(owner, name="broken.jsonl")
    Dataset.objects.filter(pk=broken.pk).update(status=Dataset.Status.INVALID, tags=["pets-old"])
    make_dataset(name="pets-of-someone-else.jsonl")
    return owner, pets, chats, broken


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", {"pets", "chats", "broken"}),
        ("?purpose=vision", {"pets"}),
        ("?status=invalid", {"broken"}),
        ("?search=PET", {"pets"}),
        ("?search=chats.json", {"chats"}),
        ("?tag=pets", {"pets"}),  # exactly: not pets-old
        ("?tag=support&purpose=fine-tune", {"chats"}),
    ],
)
def test_api_lists_filter_by_purpose_status_search_and_tag(query, expected):
    owner, *datasets = _catalog()
    names = {d.id: d.filename.removesuffix(".jsonl") for d in datasets}
    for url in ("/v1/datasets", "/v1/files"):
        body = api_client(owner).get(url + query).json()
        assert {names[row["id"]] for row in body["data"]} == expected, url


def test_api_list_rejects_an_unknown_status():
    response = api_client(make_user()).get("/v1/datasets?status=finished")
    assert response.status_code == 400 and response.json()["error"]["param"] == "status"


def test_datasets_page_filters_with_a_get_form(client):
    owner, pets, chats, broken = _catalog()
    client.force_login(owner)
    body = client.get(reverse("datasets:list") + "?tag=pets").content.decode()
    assert 'method="get"' in body and 'name="tag" value="pets"' in body
    assert "Pet photos" in body and chats.id not in body and broken.id not in body
    body = client.get(reverse("datasets:list") + "?search=nothing-like-it").content.decode()
    assert "No dataset matches these filters." in body
    response = client.get(reverse("datasets:list") + "?status=finished")
    assert response.status_code == 400 and 'data-param="status"' in response.content.decode()
