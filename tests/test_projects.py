"""Projects: members see the project's objects and nothing else; a key acts in its own project only;
viewers read; the project is the job's organization, the ``ft:`` name's org and the quota's account."""

import pytest
from django.urls import reverse

from accounts_app.models import ApiKey, Membership, Project
from accounts_app.selectors import project_personal, user_acting
from accounts_app.services import api_key_create, member_add, project_create
from datasets_app.models import Dataset
from jobs_app.models import FineTuneJob, Quota
from jobs_app.services import job_claim_next
from models_app.services import fine_tuned_model_create
from tests.api import api_client
from tests.factories import make_dataset, make_job, make_upload, make_user
from tests.test_isolation import OBJECT_URLS

pytestmark = pytest.mark.django_db
Role = Membership.Role


def _client(user, project) -> object:
    """An API client with a key of ``user`` acting in ``project``."""
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer " + api_key_create(user=user, name="t", project=project)[1])
    return client


@pytest.fixture
def team(base_model, tmp_path):
    """Alice owns the project ``team``; Bob is a member, Vera a viewer; Alice made a job and its model there."""
    alice, bob, vera = make_user("alice"), make_user("bob"), make_user("vera")
    project = project_create(user=alice, name="team")
    member_add(project=project, by=alice, user="bob", role=Role.MEMBER)
    member_add(project=project, by=alice, user="vera", role=Role.VIEWER)
    job = make_job(user_acting(alice, project.id))
    (tmp_path / "adapter_config.json").write_text("{}")
    model = fine_tuned_model_create(job=job, adapter_dir=tmp_path)
    return {"project": project, "alice": alice, "bob": bob, "vera": vera,
            "objects": {"file": job.dataset_id, "job": job.id, "model": model.id}}


def test_every_user_has_a_personal_project_they_own():
    user = make_user()
    project = project_personal(user)
    assert project.personal and project.name == user.username
    assert Membership.objects.get(project=project, user=user).role == Role.OWNER


def test_member_sees_a_teammates_dataset_job_and_model(team):
    bob = _client(team["bob"], team["project"])
    objects = team["objects"]
    assert [f["id"] for f in bob.get("/v1/files").json()["data"]] == [objects["file"]]
    assert [j["id"] for j in bob.get("/v1/fine_tuning/jobs").json()["data"]] == [objects["job"]]
    assert objects["model"] in [m["id"] for m in bob.get("/v1/models").json()["data"]]
    assert bob.get(f"/v1/models/{objects['model']}").status_code == 200


def test_non_member_and_a_members_key_of_another_project_get_404_everywhere(team):
    """Mallory belongs to no project of the team's; Bob does, but his personal project's key does not reach it.
    One test walks every URL (one fixture: a job and a model cost seconds)."""
    callers = {"non-member": api_client(make_user("mallory")),
               "other project's key": _client(team["bob"], project_personal(team["bob"]))}
    for who, client in callers.items():
        for method, url in OBJECT_URLS:
            response = getattr(client, method)(url.format(**team["objects"]))
            assert response.status_code == 404, (who, url, response.content)
            assert response.json()["error"]["code"] == "not_found"
    assert Dataset.objects.filter(pk=team["objects"]["file"]).exists()
    assert FineTuneJob.objects.get(pk=team["objects"]["job"]).status == FineTuneJob.Status.VALIDATING_FILES


def test_lists_of_another_project_are_empty(team):
    personal = _client(team["alice"], project_personal(team["alice"]))
    assert personal.get("/v1/files").json()["data"] == []
    assert personal.get("/v1/fine_tuning/jobs").json()["data"] == []
    assert team["objects"]["model"] not in [m["id"] for m in personal.get("/v1/models").json()["data"]]


def test_viewer_reads_but_any_write_is_403(team):
    vera = _client(team["vera"], team["project"])
    assert vera.get(f"/v1/fine_tuning/jobs/{team['objects']['job']}").status_code == 200
    attempts = [vera.post("/v1/files", {"file": make_upload(), "purpose": "fine-tune"}, format="multipart"),
                vera.post("/v1/fine_tuning/jobs", {"model": "tiny-llama", "training_file": team["objects"]["file"]},
                          format="json"),
                vera.post(f"/v1/fine_tuning/jobs/{team['objects']['job']}/cancel"),
                vera.delete(f"/v1/files/{team['objects']['file']}")]
    for response in attempts:
        assert response.status_code == 403, response.content
        error = response.json()["error"]
        assert error["code"] == "project_role" and "viewer" in error["message"]
    assert FineTuneJob.objects.filter(project=team["project"]).count() == 1
    assert Dataset.objects.filter(project=team["project"]).count() == 1
    assert FineTuneJob.objects.get(pk=team["objects"]["job"]).status == FineTuneJob.Status.VALIDATING_FILES


def test_job_organization_and_ft_name_carry_the_project(team):
    project = team["project"]
    body = _client(team["bob"], project).get(f"/v1/fine_tuning/jobs/{team['objects']['job']}").json()
    assert body["organization_id"] == project.id
    assert team["objects"]["model"].split(":")[2] == project.id
    model = _client(team["bob"], project).get(f"/v1/models/{team['objects']['model']}").json()
    assert model["owned_by"] == project.id


def test_a_members_job_goes_to_the_project_and_is_versioned_with_the_teammates(team, tmp_path):
    bob = user_acting(team["bob"], team["project"].id)
    job = make_job(bob, dataset=Dataset.objects.get(pk=team["objects"]["file"]))
    assert job.project_id == team["project"].id and job.owner == team["bob"]
    model = fine_tuned_model_create(job=job, adapter_dir=tmp_path)
    assert model.version == 2  # the same name as Alice's model in the project: its next version


def test_quota_is_per_project_shared_by_its_members(team):
    project = team["project"]
    Quota.objects.create(project=project, max_concurrent_jobs=1)
    alice = make_job(user_acting(team["alice"], project.id), status=FineTuneJob.Status.QUEUED)
    bob = make_job(user_acting(team["bob"], project.id), status=FineTuneJob.Status.QUEUED)
    assert job_claim_next(job_id=alice.id, worker="w1").id == alice.id
    assert job_claim_next(job_id=bob.id, worker="w2") is None  # the team's one slot is Alice's
    bob.refresh_from_db()
    assert bob.status == FineTuneJob.Status.QUEUED and "concurrent jobs" in bob.wait_reason
    staff = api_client(make_user(is_staff=True))
    assert staff.get(f"/v1/quotas/{project.id}").json()["max_concurrent_jobs"] == 1
    assert staff.get(f"/v1/quotas/{project_personal(team['bob']).id}").json()["max_concurrent_jobs"] is None
    solo = make_job(user_acting(team["bob"]), status=FineTuneJob.Status.QUEUED)  # his personal project's account
    assert job_claim_next(job_id=solo.id, worker="w3").id == solo.id


def test_projects_api_create_add_list_and_remove_members():
    owner, other = make_user("olga"), make_user("pete", email="pete@example.com")
    client = api_client(owner)
    made = client.post("/v1/projects", {"name": "research"}, format="json").json()
    assert made["id"].startswith("proj_") and made["role"] == "owner" and not made["personal"]
    assert [p["name"] for p in client.get("/v1/projects").json()["data"]] == ["olga", "research"]
    added = client.post(f"/v1/projects/{made['id']}/members", {"user": "pete@example.com", "role": "viewer"},
                        format="json")
    assert added.status_code == 200 and added.json()["role"] == "viewer"
    members = client.get(f"/v1/projects/{made['id']}/members").json()["data"]
    assert {(m["username"], m["role"]) for m in members} == {("olga", "owner"), ("pete", "viewer")}
    key = api_client(other).post(f"/v1/projects/{made['id']}/api_keys", {"name": "ci"}, format="json").json()
    assert key["project_id"] == made["id"] and key["key"].startswith("sk-ft-")
    assert client.delete(f"/v1/projects/{made['id']}/members/{other.pk}").status_code == 200
    assert api_client(other).get(f"/v1/projects/{made['id']}").status_code == 404
    assert ApiKey.objects.get(project_id=made["id"], user=other).revoked_at is not None


def test_only_owners_manage_members_and_a_project_keeps_an_owner(team):
    bob = api_client(team["bob"])
    project_id = team["project"].id
    refused = bob.post(f"/v1/projects/{project_id}/members", {"user": "mallory"}, format="json")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "project_role"
    alice = api_client(team["alice"])
    last = alice.post(f"/v1/projects/{project_id}/members", {"user": "alice", "role": "member"}, format="json")
    assert last.status_code == 400 and last.json()["error"]["param"] == "role"
    assert Membership.objects.get(project=team["project"], user=team["alice"]).role == Role.OWNER
    unknown = alice.post(f"/v1/projects/{project_id}/members", {"user": "nobody"}, format="json")
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "user"
    personal = alice.post(f"/v1/projects/{project_personal(team['alice']).id}/members", {"user": "bob"},
                          format="json")
    assert personal.status_code == 400
    assert api_client(make_user()).get(f"/v1/projects/{project_id}/members").status_code == 404


def test_nobody_leaves_a_personal_project(team):
    alice = team["alice"]
    personal = project_personal(alice)
    response = api_client(alice).delete(f"/v1/projects/{personal.id}/members/{alice.pk}")
    assert response.status_code == 400 and response.json()["error"]["param"] == "user_id"
    assert "personal project" in response.json()["error"]["message"]
    assert Membership.objects.filter(project=personal, user=alice, role=Role.OWNER).exists()


def test_a_removed_members_key_stops_working(team):
    client = _client(team["bob"], team["project"])
    Membership.objects.filter(project=team["project"], user=team["bob"]).delete()
    response = client.get("/v1/files")
    assert response.status_code == 401 and response.json()["error"]["code"] == "project_membership"


def test_pages_act_in_the_project_chosen_in_the_switcher(team, client):
    client.force_login(team["bob"])
    assert team["objects"]["file"] not in client.get(reverse("datasets:list")).content.decode()
    switched = client.post(reverse("accounts:project_switch"), {"project": team["project"].id})
    assert switched.status_code == 302
    assert team["objects"]["file"] in client.get(reverse("datasets:list")).content.decode()
    page = client.get(reverse("accounts:projects")).content.decode()
    assert "alice" in page and "vera" in page and team["project"].id in page
    other = project_create(user=make_user("zed"), name="secret")
    assert client.post(reverse("accounts:project_switch"), {"project": other.id}).status_code == 404


def test_a_viewer_cannot_post_page_forms(team, client):
    client.force_login(team["vera"])
    client.post(reverse("accounts:project_switch"), {"project": team["project"].id})
    response = client.post(reverse("datasets:list"), {"file": make_upload()})
    assert response.status_code == 403
    assert Dataset.objects.filter(project=team["project"]).count() == 1


def test_a_staff_viewer_still_uses_the_admin(team, client):
    vera = team["vera"]
    vera.is_staff = vera.is_superuser = True
    vera.save()
    client.force_login(vera)
    client.post(reverse("accounts:project_switch"), {"project": team["project"].id})
    key = ApiKey.objects.filter(user=team["bob"]).first() or api_key_create(user=team["bob"], name="b")[0]
    response = client.post(reverse("admin:accounts_app_apikey_changelist"),
                           {"action": "delete_selected", "_selected_action": [key.pk]})
    assert response.status_code == 200  # the admin's confirmation page, not the viewer's 403


def test_personal_project_of_existing_objects_is_the_owners(base_model):
    owner = make_user()
    dataset = make_dataset(owner)
    assert dataset.project == project_personal(owner)
    assert Project.objects.filter(personal_user=owner).count() == 1


def test_a_sweep_in_a_project_runs_its_later_trials_there_and_members_see_it(team):
    """The first trials start in the request; the next one starts from a task, on behalf of the sweep's
    maker, in the sweep's project (the team's file is not in the maker's personal project)."""
    from django.utils import timezone

    from jobs_app.services import job_transition
    from sweeps_app.models import Sweep, SweepTrial
    from sweeps_app.services import sweep_trial_finish

    bob = _client(team["bob"], team["project"])
    space = {"n_epochs": {"type": "int", "low": 1, "high": 2}}
    body = {"model": "tiny-llama", "training_file": team["objects"]["file"], "search_space": space,
            "objective": {"metric": "train_loss", "direction": "minimize"}, "max_trials": 2, "parallelism": 1}
    made = bob.post("/v1/sweeps", body, format="json")
    assert made.status_code == 200, made.content
    sweep = Sweep.objects.get(pk=made.json()["id"])
    first = sweep.trials.get(number=0).job
    FineTuneJob.objects.filter(pk=first.pk).update(status=FineTuneJob.Status.RUNNING)
    job_transition(job_id=first.id, to=FineTuneJob.Status.FAILED, finished_at=timezone.now())
    sweep_trial_finish(job_id=first.id)
    second = sweep.trials.get(number=1)
    assert second.state == SweepTrial.State.RUNNING and second.job.project_id == team["project"].id
    assert _client(team["alice"], team["project"]).get(f"/v1/sweeps/{sweep.id}").status_code == 200
    assert api_client(make_user()).get(f"/v1/sweeps/{sweep.id}").status_code == 404


def _bob_sweep(team, **overrides) -> "object":
    """Bob's sweep in the team's project, its first trial running (two trials, one at a time)."""
    from sweeps_app.models import Sweep

    space = {"n_epochs": {"type": "int", "low": 1, "high": 2}}
    body = {"model": "tiny-llama", "training_file": team["objects"]["file"], "search_space": space,
            "objective": {"metric": "train_loss", "direction": "minimize"}, "max_trials": 2, "parallelism": 1,
            **overrides}
    made = _client(team["bob"], team["project"]).post("/v1/sweeps", body, format="json")
    assert made.status_code == 200, made.content
    return Sweep.objects.get(pk=made.json()["id"])


def test_a_removed_members_sweep_is_cancelled_saying_why_and_starts_no_trial(team):
    from django.utils import timezone

    from accounts_app.services import member_remove
    from jobs_app.services import job_transition
    from sweeps_app.services import sweep_trial_finish

    sweep = _bob_sweep(team)
    first = sweep.trials.get(number=0).job
    member_remove(project=team["project"], by=team["alice"], user_id=team["bob"].pk)
    FineTuneJob.objects.filter(pk=first.pk).update(status=FineTuneJob.Status.RUNNING)
    job_transition(job_id=first.id, to=FineTuneJob.Status.FAILED, finished_at=timezone.now())
    sweep_trial_finish(job_id=first.id)

    assert sweep.trials.count() == 1  # no trial started on behalf of someone gone
    body = _client(team["alice"], team["project"]).get(f"/v1/sweeps/{sweep.id}").json()
    assert body["status"] == "cancelled"
    assert body["reason"].startswith(f"bob no longer belongs to project team ({team['project'].id})")


def test_a_sweep_of_a_member_made_viewer_cancels_its_running_trials_with_the_reason(team):
    from django.utils import timezone

    from jobs_app.services import job_transition
    from sweeps_app.services import sweep_trial_finish

    sweep = _bob_sweep(team, max_trials=3, parallelism=2)
    first, second = (t.job for t in sweep.trials.order_by("number"))
    member_add(project=team["project"], by=team["alice"], user="bob", role=Role.VIEWER)
    FineTuneJob.objects.filter(pk=first.pk).update(status=FineTuneJob.Status.RUNNING)
    job_transition(job_id=first.id, to=FineTuneJob.Status.FAILED, finished_at=timezone.now())
    sweep_trial_finish(job_id=first.id)

    sweep.refresh_from_db()
    assert sweep.status == "cancelled" and sweep.trials.count() == 2
    assert sweep.reason.startswith(f"bob is only a viewer of project team ({team['project'].id})")
    second.refresh_from_db()
    assert second.status == FineTuneJob.Status.CANCELLED
    assert "bob is only a viewer" in second.events.order_by("-seq").first().message
    assert "bob is only a viewer" in sweep.trials.get(number=1).note


def test_a_removed_members_pipeline_step_fails_saying_why(team):
    from accounts_app.services import member_remove
    from pipelines_app.models import PipelineStep
    from pipelines_app.services import pipeline_advance, pipeline_create

    bob = user_acting(team["bob"], team["project"].id)
    recipe = {"inputs": {"dataset": team["objects"]["file"]}, "steps": [
        {"id": "train", "type": "train", "model": "tiny-llama", "training_file": "${inputs.dataset}"}]}
    run = pipeline_create(owner=bob, recipe=recipe).runs.get()
    member_remove(project=team["project"], by=team["alice"], user_id=team["bob"].pk)
    pipeline_advance(run_id=run.id)

    step = PipelineStep.objects.get(run=run)
    assert step.status == "failed" and "bob no longer belongs to project team" in step.error
    assert FineTuneJob.objects.filter(project=team["project"]).count() == 1  # Alice's only


def test_a_removed_members_finished_job_keeps_its_result_file_in_the_project(team):
    from accounts_app.services import member_remove
    from jobs_app.services import job_result_file_create

    dataset = Dataset.objects.get(pk=team["objects"]["file"])
    job = make_job(user_acting(team["bob"], team["project"].id), dataset=dataset)
    member_remove(project=team["project"], by=team["alice"], user_id=team["bob"].pk)
    assert job_result_file_create(job).project_id == team["project"].id


def test_the_members_forms_act_on_the_project_the_page_showed_not_the_sessions_latest(team, client):
    """Alice's page shows the team; in another tab she acts in her lab since; the team page's form adds to
    the team."""
    alice = team["alice"]
    lab = project_create(user=alice, name="lab")
    client.force_login(alice)
    client.post(reverse("accounts:project_switch"), {"project": team["project"].id})
    page = client.get(reverse("accounts:projects")).content.decode()
    add_url = reverse("accounts:member_add", args=[team["project"].id])
    assert f'action="{add_url}"' in page
    client.post(reverse("accounts:project_switch"), {"project": lab.id})  # the other tab
    make_user("carol")
    assert client.post(add_url, {"user": "carol", "role": "member"}).status_code == 302
    assert Membership.objects.filter(project=team["project"], user__username="carol").exists()
    assert not Membership.objects.filter(project=lab, user__username="carol").exists()
    remove = client.post(reverse("accounts:member_remove", args=[team["project"].id, team["vera"].pk]))
    assert remove.status_code == 302 and not Membership.objects.filter(project=team["project"], user=team["vera"])


def test_the_members_forms_check_the_posters_role_in_the_named_project(team, client):
    client.force_login(team["bob"])  # a member of the team, acting in his personal project
    response = client.post(reverse("accounts:member_add", args=[team["project"].id]), {"user": "bob", "role": "owner"})
    assert response.status_code == 403 and "Only an owner" in response.content.decode()
    outsider = project_create(user=make_user("zed"), name="secret")
    response = client.post(reverse("accounts:member_remove", args=[outsider.id, team["bob"].pk]))
    assert response.status_code == 404
    assert Membership.objects.get(project=team["project"], user=team["bob"]).role == Role.MEMBER


def test_a_member_removed_from_the_chosen_project_is_told_on_the_next_page(team, client):
    from accounts_app.services import member_remove

    client.force_login(team["bob"])
    client.post(reverse("accounts:project_switch"), {"project": team["project"].id})
    member_remove(project=team["project"], by=team["alice"], user_id=team["bob"].pk)
    page = client.get(reverse("datasets:list")).content.decode()
    assert "You no longer belong to project team: you act in your personal project bob now." in page
    assert team["objects"]["file"] not in page
    assert "no longer belong" not in client.get(reverse("datasets:list")).content.decode()  # said once


def test_listing_projects_takes_the_same_queries_however_many():
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    user = make_user()
    api = api_client(user)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert api.get("/v1/projects").status_code == 200
        return len(captured)

    queries()  # the key's first use records it
    one = queries()
    for number in range(4):
        project_create(user=user, name=f"p{number}")
    assert queries() == one
    roles = {p["name"]: p["role"] for p in api.get("/v1/projects").json()["data"]}
    assert roles == {user.username: "owner", "p0": "owner", "p1": "owner", "p2": "owner", "p3": "owner"}


def test_reading_the_personal_project_never_makes_one_logging_in_does(client):
    user = make_user("lee")
    Project.objects.filter(personal_user=user).delete()  # a user loaded without signals (a fixture)
    with pytest.raises(Project.DoesNotExist):
        project_personal(user)
    assert not Project.objects.filter(personal_user=user).exists()
    client.post(reverse("accounts:login"), {"username": "lee", "password": "pw-lee"})
    assert project_personal(user).personal_user == user
    assert Membership.objects.get(project__personal_user=user, user=user).role == Role.OWNER
