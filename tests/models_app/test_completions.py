"""The data loop through the API: store: true keeps what was served, the list filters it, feedback corrects
it, and a selection (or an imported export) becomes a versioned dataset with lineage to the conversations."""

import io
import json
import time

import pytest

from models_app.models import StoredCompletion
from tests.api import api_client
from tests.factories import make_stored_completion, make_user

pytestmark = pytest.mark.django_db
URL = "/v1/chat/completions"


@pytest.fixture
def served(monkeypatch, base_model):
    """The inference worker's own code answers with tiny-llama in this process: the view's queue runs it
    inline instead of sending it to a worker process."""
    from models_app.selectors import model_public_id
    from models_app.services import inference

    def queue(*, model, config, reply_channel, tag=""):
        inference.chat_completion_run(model_id=model_public_id(model), config=config, reply_channel=reply_channel,
                                      tag=tag)

    monkeypatch.setattr(inference, "chat_completion_queue", queue)


def _chat(client, content: str, **extra):
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": content}]
    response = client.post(URL, {"model": "tiny-llama", "messages": messages, "max_tokens": 6, "temperature": 0,
                                 **extra}, format="json")
    assert response.status_code == 200, response.content
    return messages, response.json()


def test_store_is_off_by_default_and_keeps_request_answer_and_model_version_when_on(served):
    user = make_user()
    client = api_client(user)
    _chat(client, "hello")
    assert not StoredCompletion.objects.exists()
    messages, body = _chat(client, "hello again", store=True, metadata={"app": "support"})
    stored = client.get(f"{URL}/{body['id']}").json()
    assert stored["id"] == body["id"] and stored["object"] == "chat.completion"
    assert stored["choices"][0]["message"] == body["choices"][0]["message"]
    assert (stored["model"], stored["model_version"], stored["metadata"]) == ("tiny-llama", "tiny-llama",
                                                                              {"app": "support"})
    assert stored["usage"] == body["usage"] and stored["request"] == {"max_tokens": 6, "temperature": 0}
    assert client.get(f"{URL}/{body['id']}/messages").json()["data"] == [
        {"id": f"{body['id']}-{i}", **m} for i, m in enumerate(messages)]
    assert stored["expires_at"] - stored["created"] == 30 * 86400  # the default retention


def test_streamed_completion_is_stored_when_asked(served):
    user = make_user()
    client = api_client(user)
    response = client.post(URL, {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}],
                                 "max_tokens": 4, "temperature": 0, "stream": True, "store": True}, format="json")
    events = [json.loads(line[6:]) for line in b"".join(response.streaming_content).decode().splitlines()
              if line.startswith("data: {")]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    stored = StoredCompletion.objects.get(owner=user)
    assert stored.id == events[0]["id"] and stored.answer == text


def test_stored_completions_become_a_dataset_whose_rows_equal_the_served_conversations(served):
    user = make_user()
    client = api_client(user)
    served_rows, ids = [], []
    for question in ("What is two plus two?", "Name a colour.", "Say hello."):
        messages, body = _chat(client, question, store=True)
        ids.append(body["id"])
        served_rows.append({"messages": [*messages, body["choices"][0]["message"]]})
    corrected = client.post(f"{URL}/{ids[1]}/feedback", {"rating": "down", "correction": "Blue."}, format="json")
    assert corrected.status_code == 200 and corrected.json()["correction"] == "Blue."
    assert client.post(f"{URL}/{ids[0]}/feedback", {"rating": "up"}, format="json").json()["rating"] == "up"
    served_rows[1]["messages"][-1] = {"role": "assistant", "content": "Blue."}  # the correction wins

    made = client.post(f"{URL}/datasets", {"completion_ids": ids, "filename": "loop"}, format="json")
    assert made.status_code == 200, made.content
    dataset = made.json()
    assert (dataset["status"], dataset["format"], dataset["rows"], dataset["filename"]) == ("ready", "chat", 3,
                                                                                           "loop.jsonl")
    rows = client.get(f"/v1/datasets/{dataset['id']}/preview").json()["data"]
    assert rows == served_rows
    lineage = client.get(f"/v1/datasets/{dataset['id']}/versions").json()["data"][-1]["operations"]
    assert lineage == [{"op": "from_completions", "version": 1, "completions": ids, "corrected": 1,
                        "models": ["tiny-llama"]}]
    assert all(client.get(f"{URL}/{i}").json()["datasets"] == [dataset["id"]] for i in ids)
    # ready for a preparation like any dataset
    prepared = client.post(f"/v1/datasets/{dataset['id']}/prepare", {"operations": [{"op": "dedup"}]}, format="json")
    assert prepared.status_code == 200 and prepared.json()["data"][0]["parent"] == dataset["id"]


def test_list_filters_by_model_metadata_rating_and_date_and_pages_with_after():
    user = make_user()
    day = 86400
    now = int(time.time())
    old = make_stored_completion(user, metadata={"app": "support", "lang": "en"}, created=now - 3 * day)
    middle = make_stored_completion(user, metadata={"app": "sales"}, created=now - 2 * day)
    new = make_stored_completion(user, metadata={"app": "support"}, created=now - day)
    StoredCompletion.objects.filter(pk=new.pk).update(model="ft:tiny-llama:me:x:1", model_version="tuned@v1",
                                                      rating=-1)
    make_stored_completion(make_user())  # someone else's
    client = api_client(user)

    def ids(query: str = "") -> list[str]:
        response = client.get(f"{URL}?{query}")
        assert response.status_code == 200, response.content
        return [c["id"] for c in response.json()["data"]]

    assert ids() == [new.id, middle.id, old.id]
    assert ids("order=asc") == [old.id, middle.id, new.id]
    assert ids("model=tiny-llama") == [middle.id, old.id] and ids("model=tuned@v1") == [new.id]
    assert ids("metadata[app]=support") == [new.id, old.id]
    assert ids("metadata[app]=support&metadata[lang]=en") == [old.id]
    assert ids("rating=down") == [new.id] and ids("rating=unrated") == [middle.id, old.id]
    assert ids(f"created_after={now - 2 * day - 10}&created_before={now - day - 10}") == [middle.id]
    page = client.get(f"{URL}?limit=2").json()
    assert page["has_more"] and page["last_id"] == middle.id
    assert ids(f"limit=2&after={middle.id}") == [old.id]
    assert client.get(f"{URL}?rating=great").status_code == 400


def test_another_users_stored_completions_are_404():
    theirs = make_stored_completion(make_user())
    client = api_client(make_user())
    assert client.get(f"{URL}/{theirs.id}").status_code == 404
    assert client.get(f"{URL}/{theirs.id}/messages").status_code == 404
    assert client.post(f"{URL}/{theirs.id}/feedback", {"rating": "up"}, format="json").status_code == 404
    assert client.delete(f"{URL}/{theirs.id}").status_code == 404
    made = client.post(f"{URL}/datasets", {"completion_ids": [theirs.id]}, format="json")
    assert made.status_code == 404 and made.json()["error"]["param"] == "completion_ids"
    assert client.get(URL).json()["data"] == []
    theirs.refresh_from_db()
    assert theirs.rating is None


def test_metadata_update_delete_and_bad_feedback():
    user = make_user()
    stored = make_stored_completion(user)
    client = api_client(user)
    updated = client.post(f"{URL}/{stored.id}", {"metadata": {"topic": "geo"}}, format="json").json()
    assert updated["metadata"] == {"topic": "geo"}
    assert client.post(f"{URL}/{stored.id}", {"metadata": {"k": 1}}, format="json").status_code == 400
    assert client.post(f"{URL}/{stored.id}/feedback", {}, format="json").status_code == 400
    assert client.post(f"{URL}/{stored.id}/feedback", {"rating": "meh"}, format="json").status_code == 400
    assert client.delete(f"{URL}/{stored.id}").json()["deleted"] is True
    assert client.get(f"{URL}/{stored.id}").status_code == 404


def test_bad_metadata_on_a_chat_request_is_a_400_before_anything_is_served(base_model):
    response = api_client(make_user()).post(URL, {"model": "tiny-llama", "messages": [{"role": "user", "content": "x"}],
                                                  "store": True, "metadata": {"n": 3}}, format="json")
    assert response.status_code == 400 and response.json()["error"]["param"] == "metadata"


def _export(rows) -> io.BytesIO:
    handle = io.BytesIO("".join(json.dumps(r) + "\n" for r in rows).encode())
    handle.name = "export.jsonl"
    return handle


def test_import_of_an_openai_export_becomes_a_dataset_the_same_way(base_model):
    user = make_user()
    client = api_client(user)
    completion = {"id": "chatcmpl-exported1", "object": "chat.completion", "created": 1_700_000_000,
                  "model": "gpt-4o-mini", "metadata": {"app": "web"},
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "Four."},
                               "finish_reason": "stop"}],
                  "request": {"messages": [{"role": "developer", "content": "Be brief."},
                                           {"role": "user", "content": "2+2?"}]}}
    chat_row = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
    imported = client.post(f"{URL}/import", {"file": _export([completion, chat_row])}, format="multipart")
    assert imported.status_code == 200, imported.content
    data = imported.json()["data"]
    assert imported.json()["imported"] == 2 and data[0]["id"] == "chatcmpl-exported1"
    assert (data[0]["model"], data[0]["metadata"], data[0]["source"]) == ("gpt-4o-mini", {"app": "web"}, "imported")
    again = client.post(f"{URL}/import", {"file": _export([completion])}, format="multipart")
    assert again.json()["imported"] == 0  # the same export twice adds nothing
    assert [c["id"] for c in client.get(f"{URL}?model=gpt-4o-mini").json()["data"]] == ["chatcmpl-exported1"]

    made = client.post(f"{URL}/datasets", {"completion_ids": [d["id"] for d in data]}, format="json").json()
    rows = client.get(f"/v1/datasets/{made['id']}/preview").json()["data"]
    assert rows == [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                                  {"role": "assistant", "content": "Four."}]}, chat_row]


@pytest.mark.parametrize(("rows", "message"), [
    ([{"messages": [{"role": "user", "content": "no answer"}]}], "line 1: no answer"),
    ([{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}, "oops"],
     "line 2: a row must be a JSON object"),
    ([{"messages": [{"role": "robot", "content": "q"}, {"role": "assistant", "content": "a"}]}], "messages[0]"),
    ([{"messages": [{"role": "user", "content": "q\u0000"}, {"role": "assistant", "content": "a"}]}], "NUL"),
])
def test_bad_import_is_a_400_naming_the_line_and_stores_nothing(base_model, rows, message):
    response = api_client(make_user()).post(f"{URL}/import", {"file": _export(rows)}, format="multipart")
    assert response.status_code == 400 and message in response.json()["error"]["message"]
    assert not StoredCompletion.objects.exists()


def test_retention_setting_hides_then_purges_old_completions():
    from models_app.services import stored_completions_purge

    user = make_user()
    now = int(time.time())
    old = make_stored_completion(user, created=now - 10 * 86400)
    recent = make_stored_completion(user, created=now - 86400)
    client = api_client(user)
    assert client.get(f"{URL}/settings").json()["retention_days"] == 30
    assert client.post(f"{URL}/settings", {"retention_days": 5}, format="json").json()["retention_days"] == 5
    assert [c["id"] for c in client.get(URL).json()["data"]] == [recent.id]
    assert client.get(f"{URL}/{old.id}").status_code == 404
    assert stored_completions_purge() == 1 and not StoredCompletion.objects.filter(pk=old.pk).exists()
    assert client.post(f"{URL}/settings", {"retention_days": 0}, format="json").status_code == 200
    recent.refresh_from_db()
    assert recent.expires_at is None
    assert client.post(f"{URL}/settings", {"retention_days": -1}, format="json").status_code == 400


def test_an_answer_holding_a_nul_is_stored_with_a_replacement_character(base_model):
    # tiny-llama's byte-level tokenizer has a token for byte 0; PostgreSQL's jsonb cannot hold "\u0000"
    completion = make_stored_completion(answer="a\x00b")
    stored = api_client(completion.owner).get(f"{URL}/{completion.id}").json()
    assert stored["choices"][0]["message"]["content"] == "a\ufffdb"
