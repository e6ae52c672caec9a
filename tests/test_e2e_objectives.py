"""Online RL and AI feedback through the official openai client, a live server and a real worker:
the grader runs where the job runs, and RLAIF's judged pairs come back as a downloadable file."""

import json

import pytest

from tests.e2e import client_for, upload, wait_finished

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PROMPTS = [{"messages": [{"role": "user", "content": f"Classify: The team won match {i}."}], "answer": "sports"}
           for i in range(6)]
CLOSE = {"type": "text_similarity", "name": "close", "input": "{{sample.output_text}}",
         "reference": "{{item.answer}}", "evaluation_metric": "fuzzy_match"}
SMALL = {"n_epochs": 1, "batch_size": 2, "num_generations": 2, "max_completion_length": 4}


def test_reinforcement_job_is_graded_on_the_worker_and_logs_the_reward(live_server, live_base_model, worker):
    client, _ = client_for(live_server)
    file = upload(client, PROMPTS, name="prompts.jsonl")
    job = client.fine_tuning.jobs.create(model="tiny-llama", training_file=file.id, method={
        "type": "reinforcement", "reinforcement": {"grader": CLOSE, "hyperparameters": SMALL}})
    job = wait_finished(client, job.id)
    assert job.status == "succeeded", job.error
    assert job.method.type == "reinforcement" and job.fine_tuned_model.startswith("ft:tiny-llama:")
    steps = [e.data for e in client.fine_tuning.jobs.list_events(job.id, limit=100) if e.type == "metrics"]
    assert sorted(s["step"] for s in steps) == [1, 2, 3]  # 6 prompts, 2 a step
    assert all(0 <= s["reward"] <= 1 and "rewards/close/mean" in s for s in steps), steps


def test_rlaif_job_stores_its_judged_pairs_then_trains_on_them(live_server, live_base_model, worker):
    client, _ = client_for(live_server)
    file = upload(client, [{"messages": p["messages"]} for p in PROMPTS], name="prompts.jsonl")
    grader = {**CLOSE, "reference": "the end"}
    job = client.fine_tuning.jobs.create(model="tiny-llama", training_file=file.id, method={
        "type": "rlaif", "rlaif": {"grader": grader, "hyperparameters": {**SMALL, "num_generations": 3}}})
    job = wait_finished(client, job.id)
    assert job.status == "succeeded", job.error
    pairs = job.model_extra["preference_file"]
    content = client.files.content(pairs).text
    rows = [json.loads(line) for line in content.splitlines()]
    assert rows and all({"prompt", "chosen", "rejected"} <= set(row) for row in rows)
    assert client.files.retrieve(pairs).filename == "prompts.v2.jsonl"
