"""Export a model trained by a real job, on the real Celery worker, and load what is downloaded."""

import io
import time
import zipfile

import pytest
import requests

from tests.e2e import client_for, start_job, upload, wait_finished
from workers.sample_data import classification_rows

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_trained_model_exports_merged_and_gguf_that_load_and_agree(live_server, live_base_model, worker, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    client, _ = client_for(live_server)
    job = wait_finished(client, start_job(client, upload(client).id).id)
    assert job.status == "succeeded", job.error
    api = _Api(live_server.url, client.api_key)

    merged = api.export(job.fine_tuned_model, {"kind": "merged"})
    gguf = api.export(job.fine_tuned_model, {"kind": "gguf", "quantization": "f16"})
    assert merged["status"] == gguf["status"] == "verified", (merged["error"], gguf["error"])
    assert gguf["verification"]["precision"] == "f16" and len(gguf["verification"]["prompts"]) == 3
    listed = api.get(f"/v1/registry/models/{job.fine_tuned_model}/exports").json()["data"]
    assert {e["id"] for e in listed} == {merged["id"], gguf["id"]}

    zipfile.ZipFile(io.BytesIO(api.download(job.fine_tuned_model, "merged"))).extractall(tmp_path)
    (tmp_path / "model.gguf").write_bytes(api.download(job.fine_tuned_model, "gguf-f16"))
    merged_model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    merged_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "merged")
    gguf_model = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="model.gguf")
    gguf_tokenizer = AutoTokenizer.from_pretrained(tmp_path, gguf_file="model.gguf")
    rows = [(r["messages"][0]["content"], r["messages"][1]["content"]) for r in classification_rows(24)[:6]]
    merged_answers = [_greedy(merged_model, merged_tokenizer, prompt) for prompt, _ in rows]
    assert sum(a == label for a, (_, label) in zip(merged_answers, rows, strict=True)) >= 5, merged_answers
    assert [_greedy(gguf_model, gguf_tokenizer, prompt) for prompt, _ in rows] == merged_answers


class _Api:
    """The registry endpoints are extras the openai client has no methods for: plain HTTP."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {key}"}

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.url + path, headers=self.headers, timeout=30, **kwargs)

    def export(self, model_id: str, body: dict, timeout: float = 180) -> dict:
        response = requests.post(f"{self.url}/v1/registry/models/{model_id}/exports", json=body,
                                 headers=self.headers, timeout=30)
        assert response.status_code == 201, response.text
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            export = self.get(f"/v1/registry/exports/{response.json()['id']}").json()
            if export["status"] in ("verified", "failed"):
                return export
            time.sleep(0.5)
        raise AssertionError(f"export still {export['status']} after {timeout}s")

    def download(self, model_id: str, artifact: str) -> bytes:
        response = self.get(f"/v1/models/{model_id}/download", params={"artifact": artifact})
        assert response.status_code == 200, response.text
        return response.content


def _greedy(model, tokenizer, prompt: str) -> str:
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    return tokenizer.decode(output[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
