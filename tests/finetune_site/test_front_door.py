"""The ASGI handler in front of Django: a chunked body (no Content-Length) is read like any other."""

import io
import json

from finetune_site.front_door import SpoolingASGIHandler


def _request(body: bytes, content_type: str, length: bool = False):
    headers = [(b"content-type", content_type.encode())]
    if length:
        headers.append((b"content-length", str(len(body)).encode()))
    scope = {"type": "http", "method": "POST", "path": "/v1/fine_tuning/jobs", "query_string": b"", "root_path": "",
             "headers": headers, "server": ("testserver", 80), "client": ("127.0.0.1", 5000), "scheme": "http"}
    request, response = SpoolingASGIHandler().create_request(scope, io.BytesIO(body))
    assert response is None
    return request


def test_a_chunked_json_body_is_seen_whole_not_as_empty():
    body = json.dumps({"model": "tiny-llama", "training_file": "file-abc"}).encode()
    request = _request(body, "application/json")
    assert request.META["CONTENT_LENGTH"] == str(len(body)) and json.loads(request.body)["model"] == "tiny-llama"


def test_a_chunked_multipart_upload_carries_its_file():
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"t.jsonl\"\r\n"
            f"Content-Type: application/jsonl\r\n\r\n{{}}\n\r\n--{boundary}--\r\n").encode()
    request = _request(body, f"multipart/form-data; boundary={boundary}")
    assert request.POST["purpose"] == "fine-tune" and request.FILES["file"].read() == b"{}\n"


def test_a_body_with_its_length_keeps_it():
    assert _request(b"{}", "application/json", length=True).META["CONTENT_LENGTH"] == "2"
