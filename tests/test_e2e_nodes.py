"""A job over two nodes: two worker processes on this machine act as two hosts. They are claimed together
or not at all, in the queue's fair-share order, train one run of world size 2 through torchrun's c10d
rendezvous, and a node killed mid-run is handled like a dead worker (the job resumes from its last
checkpoint on a new gang). Sharded over the two nodes, each stores its own rank's part of every
checkpoint."""

import json
import re

import pytest
from django.core.files.storage import default_storage

from jobs_app.models import Checkpoint, FineTuneJob, JobEvent
from jobs_app.services import job_send
from tests.e2e import client_for, start_job, upload, wait_finished, wait_for
from tests.factories import make_dataset, make_job, make_usage, make_user
from workers.sample_data import classification_rows

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
NODE_ENV = {"NODE_ADDRESS": "127.0.0.1", "GANG_WAIT_SECONDS": "20", "GANG_RETRY_SECONDS": "1",
            "JOB_LEASE_SECONDS": "20", "JOB_HEARTBEAT_SECONDS": "2"}


@pytest.fixture
def two_workers(worker_pool, live_base_model):
    from tests.conftest import WorkerPool

    worker_pool.stop()  # transactional tests flush tables: restart so that both register
    worker_pool.ensure(NODE_ENV)
    second = WorkerPool(worker_pool.database_url, name="second")
    second.ensure(NODE_ENV)
    yield worker_pool, second
    second.stop()
    worker_pool.ensure()  # back to the default worker for the other tests


def _steps(job_id: str) -> list[int]:
    return sorted(e.data["step"] for e in JobEvent.objects.filter(job_id=job_id, type="metrics")
                  if "train_loss" in e.data)


def test_two_node_job_trains_once_across_two_workers(live_server, two_workers):
    client, _ = client_for(live_server)
    job = wait_finished(client, start_job(client, upload(client).id, nodes=2, n_epochs=2, batch_size=4).id)
    assert job.status == "succeeded", job.error
    row = FineTuneJob.objects.get(pk=job.id)
    assert sorted(row.gang["members"]) == sorted(pool.node for pool in two_workers)  # one node on each worker
    assert (row.attempt, row.gang["attempt"]) == (1, 1)
    assert _steps(job.id) == [1, 2, 3, 4, 5, 6]  # 24 rows / (4 rows x 2 ranks, one per node) x 2 epochs
    assert JobEvent.objects.filter(job_id=job.id, message__startswith="Node 2 of 2 joined").count() == 1
    assert client.models.retrieve(job.fine_tuned_model).id == job.fine_tuned_model


def test_a_lighter_users_two_node_job_runs_before_a_heavier_users_older_job(live_server, two_workers):
    heavy, light = make_user(), make_user()
    make_usage(heavy, minutes=10)
    older = make_job(heavy, dataset=make_dataset(heavy, rows=classification_rows(8)), status="queued",
                     hyperparameters={"n_epochs": 1, "batch_size": 8})
    gang = make_job(light, dataset=make_dataset(light, rows=classification_rows(8)), status="queued",
                    hyperparameters={"nodes": 2, "n_epochs": 1, "batch_size": 4})
    for job in (older, gang):  # both workers are registered: the older job's message goes first
        job_send(job)

    for owner, job in ((light, gang), (heavy, older)):
        assert wait_finished(client_for(live_server, owner)[0], job.id).status == "succeeded"
    gang.refresh_from_db()
    older.refresh_from_db()
    assert gang.started_at < older.started_at  # fair share: the lighter user's gang first, on both workers
    assert sorted(gang.gang["members"]) == sorted(pool.node for pool in two_workers)


def test_two_node_job_waits_while_only_one_worker_is_registered(live_server, worker_pool, live_base_model):
    worker_pool.stop()
    worker_pool.ensure({**NODE_ENV, "GANG_WAIT_SECONDS": "2", "GANG_RETRY_SECONDS": "30"})
    try:
        client, _ = client_for(live_server)
        job = start_job(client, upload(client).id, nodes=2, n_epochs=1)
        wait_for(lambda: FineTuneJob.objects.get(pk=job.id).wait_reason, timeout=180, what="a wait reason")
        shown = client.fine_tuning.jobs.retrieve(job.id)
        assert shown.status == "queued" and shown.trained_tokens is None
        assert shown.wait_reason == "waiting for 2 training workers (a 2-node job); 1 is registered"
        assert FineTuneJob.objects.get(pk=job.id).attempt == 0  # nothing was claimed: together or not at all
        client.fine_tuning.jobs.cancel(job.id)
    finally:
        worker_pool.ensure()


def _follower_killed_after_checkpoint(client, job_id: str, two_workers, *, step: int):
    """Kill -9 the second node's worker once a checkpoint at ``step`` or later is stored; once the first
    node gave the attempt up, that machine comes back (the job gathers two nodes again). The job as it ends."""
    wait_for(lambda: Checkpoint.objects.filter(job_id=job_id, step__gte=step).exists(), timeout=240,
             what=f"a checkpoint at step {step}")
    members = FineTuneJob.objects.get(pk=job_id).gang["members"]
    [follower] = [pool for pool in two_workers if pool.node == members[1]]
    follower.kill()
    wait_for(lambda: FineTuneJob.objects.get(pk=job_id).status == "queued", timeout=120,
             what="the first node to give the attempt up")
    follower.ensure(NODE_ENV)
    return wait_finished(client, job_id, timeout=300)


def test_a_node_killed_mid_run_is_retried_from_the_last_checkpoint(live_server, two_workers):
    client, _ = client_for(live_server)
    job = start_job(client, upload(client).id, nodes=2, n_epochs=8, batch_size=4, save_steps=3)
    done = _follower_killed_after_checkpoint(client, job.id, two_workers, step=6)
    assert done.status == "succeeded", done.error
    assert FineTuneJob.objects.get(pk=job.id).attempt == 2
    resumed = JobEvent.objects.get(job_id=job.id, message__startswith="Resuming from the checkpoint")
    assert resumed.data["resume_step"] >= 6
    assert _steps(job.id) == list(range(1, 25))  # 24 rows / (4 x 2 ranks) x 8 epochs, each step once
    assert JobEvent.objects.filter(job_id=job.id, message__startswith="Attempt 1 failed").exists()


def _checkpoint_files(job_id: str, step: int) -> list[str]:
    """The files the stored checkpoint at ``step`` lists in its manifest (written once it is whole), each
    checked to be in storage."""
    prefix = Checkpoint.objects.get(job_id=job_id, step=step).storage_path
    with default_storage.open(f"{prefix}/manifest.json") as handle:
        files = json.load(handle)["files"]
    assert all(default_storage.exists(f"{prefix}/{name}") for name in files)
    return files


def test_fsdp_over_two_nodes_stores_both_ranks_parts_and_the_whole_model(live_server, two_workers, tmp_path):
    from models_app.base_models.services import base_model_local_path
    from models_app.models import FineTunedModel
    from models_app.services.artifacts import model_files_fetch
    from workers.loading import model_load
    from workers.tiny_model import PARAMETERS

    client, _ = client_for(live_server)
    job = start_job(client, upload(client).id, nodes=2, adapter="full", sharding="fsdp", n_epochs=1, batch_size=4,
                    save_steps=2)
    done = wait_finished(client, job.id, timeout=300)
    assert done.status == "succeeded", done.error
    row = FineTuneJob.objects.get(pk=job.id)
    assert sorted(row.gang["members"]) == sorted(pool.node for pool in two_workers) and not row.gang.get("parts")
    assert _steps(job.id) == [1, 2, 3]  # 24 rows / (4 rows x 2 ranks, one per node)
    held = JobEvent.objects.get(job_id=job.id, message__startswith="Parameters held per rank").message
    parts = [int(count.replace(",", "")) for count in re.findall(r"[\d,]+", held.split(":")[1])]
    assert len(parts) == 2 and sum(parts) == PARAMETERS and all(0.4 < p / PARAMETERS < 0.6 for p in parts), held
    # every checkpoint counts once whole: each node's rank stored its part under it
    assert sorted(Checkpoint.objects.filter(job_id=job.id).values_list("step", flat=True)) == [2, 3]
    for step in (2, 3):
        files = _checkpoint_files(job.id, step)
        for folder in ("pytorch_model_fsdp_0", "optimizer_0"):
            assert {f"{folder}/__0_0.distcp", f"{folder}/__1_0.distcp"} <= set(files), files
    assert JobEvent.objects.filter(job_id=job.id, message="Saved checkpoint at step 3").count() == 1
    # the final model was gathered whole, as on one node: the base's every weight, some of them trained
    model = FineTunedModel.objects.get(pk=done.fine_tuned_model)
    base_path = base_model_local_path(row.base_model)
    tuned = model_load(base_path, adapter_path=str(model_files_fetch(model, tmp_path / "model"))).state_dict()
    base = model_load(base_path).state_dict()
    assert {name: t.shape for name, t in tuned.items()} == {name: t.shape for name, t in base.items()}
    assert any(not tuned[name].equal(base[name]) for name in base)


def test_a_node_of_a_sharded_job_killed_mid_run_resumes_from_the_last_whole_checkpoint(live_server, two_workers):
    client, _ = client_for(live_server)
    job = start_job(client, upload(client).id, nodes=2, adapter="full", sharding="fsdp", n_epochs=4, batch_size=4,
                    save_steps=3)
    done = _follower_killed_after_checkpoint(client, job.id, two_workers, step=3)  # a whole one: both parts
    assert done.status == "succeeded", done.error
    assert FineTuneJob.objects.get(pk=job.id).attempt == 2
    resumed = JobEvent.objects.get(job_id=job.id, message__startswith="Resuming from the checkpoint")
    assert resumed.data["resume_step"] >= 3 and resumed.data["resume_step"] % 3 == 0
    assert _steps(job.id) == list(range(1, 13))  # 24 rows / (4 x 2 ranks) x 4 epochs, each step once
    files = _checkpoint_files(job.id, 12)  # the resumed attempt's checkpoints are whole too
    assert {"pytorch_model_fsdp_0/__0_0.distcp", "pytorch_model_fsdp_0/__1_0.distcp"} <= set(files)
