"""The queue's order and the quota checks, as pure functions (no database)."""

from datetime import UTC, datetime, timedelta

import pytest

from jobs_app.services.quotas import Limits, Need, Queued, Usage, queue_order, quota_never_fits, quota_problem

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def q(job_id: str, account: str = "user-1", *, priority: int = 0, recent: float = 0.0, age: int = 0) -> Queued:
    """A queued job created ``age`` minutes after T0 (a higher age is a younger job)."""
    return Queued(job_id=job_id, account=account, priority=priority, recent_seconds=recent,
                  created_at=T0 + timedelta(minutes=age))


def ids(queued) -> list[str]:
    return [entry.job_id for entry in queue_order(queued)]


@pytest.mark.parametrize(("queued", "expected"), [
    ([], []),
    ([q("a")], ["a"]),
    # age alone: oldest first, whatever order they come in
    ([q("c", age=3), q("a", age=1), q("b", age=2)], ["a", "b", "c"]),
    # fair share beats age: the account with less recent usage goes first even with younger jobs
    ([q("a1", "user-1", recent=600, age=0), q("a2", "user-1", recent=600, age=1), q("b1", "user-2", recent=0, age=5)],
     ["b1", "a1", "a2"]),
    # priority beats fair share and age
    ([q("a", "user-1", recent=0, age=0), q("b", "user-2", recent=10_000, age=9, priority=1)], ["b", "a"]),
    # a negative priority goes after everyone at 0, even an account that used more
    ([q("low", "user-1", priority=-1, recent=0, age=0), q("busy", "user-2", recent=99_999, age=5)], ["busy", "low"]),
    # within one account: age
    ([q("new", "user-1", recent=50, age=9), q("old", "user-1", recent=50, age=1)], ["old", "new"]),
    # equal priority and usage across accounts: age decides
    ([q("b", "user-2", recent=5, age=2), q("a", "user-1", recent=5, age=1)], ["a", "b"]),
    # an exact tie: the id decides, so two workers agree
    ([q("y", "user-2"), q("x", "user-1")], ["x", "y"]),
    # three accounts, three usages
    ([q("a", "user-1", recent=300), q("b", "user-2", recent=100), q("c", "user-3", recent=200)], ["b", "c", "a"]),
    # priorities sort before usage even among many
    ([q("p0", "user-1", priority=0), q("p2", "user-2", priority=2, recent=50), q("p1", "user-3", priority=1)],
     ["p2", "p1", "p0"]),
    # the same usage to the second: tiny differences still count
    ([q("a", "user-1", recent=10.5), q("b", "user-2", recent=10.25)], ["b", "a"]),
])
def test_queue_order(queued, expected):
    assert ids(queued) == expected


def test_queue_order_interleaves_two_accounts_as_usage_grows():
    """Replaying the claims: after each claim the claimant's usage grows by one job's run, so a backlog of four
    and a later backlog of two alternate instead of running four then two."""
    jobs = [q(f"a{i}", "user-1", age=i) for i in range(4)] + [q(f"b{i}", "user-2", age=10 + i) for i in range(2)]
    usage = {"user-1": 0.0, "user-2": 0.0}
    started = []
    while jobs:
        current = [Queued(j.job_id, j.account, j.priority, usage[j.account], j.created_at) for j in jobs]
        first = queue_order(current)[0]
        started.append(first.job_id)
        usage[first.account] += 60
        jobs = [j for j in jobs if j.job_id != first.job_id]
    assert started == ["a0", "b0", "a1", "b1", "a2", "a3"]


@pytest.mark.parametrize(("limits", "usage", "need", "expected"), [
    (Limits(), Usage(running=99, gpu_hours=1e6, tokens=10**12), Need(gpu_hours=5, tokens=10**9), ""),
    (Limits(max_concurrent_jobs=2), Usage(running=1), Need(), ""),
    (Limits(max_concurrent_jobs=2), Usage(running=2), Need(),
     "waiting for a slot: 2 of the account's 2 concurrent jobs are running (quota)"),
    (Limits(tokens_per_month=1000), Usage(tokens=400), Need(tokens=600), ""),
    (Limits(tokens_per_month=1000), Usage(tokens=401), Need(tokens=600),
     "waiting for next month's token budget: 401 of 1,000 used this month and this job needs about 600 (quota)"),
    (Limits(gpu_hours_per_month=2), Usage(gpu_hours=1.5), Need(gpu_hours=0.5), ""),
    (Limits(gpu_hours_per_month=2), Usage(gpu_hours=1.5), Need(gpu_hours=0.75),
     "waiting for next month's GPU-hour budget: 1.50 of 2 used this month and this job needs about 0.75 (quota)"),
    # an unknown need (no estimate yet) waits only for what is already used up
    (Limits(gpu_hours_per_month=2), Usage(gpu_hours=2.5), Need(), "waiting for next month's GPU-hour budget: "
     "2.50 of 2 used this month and this job needs about 0.00 (quota)"),
])
def test_quota_problem(limits, usage, need, expected):
    assert quota_problem(limits, usage, need) == expected


def test_quota_problem_names_a_job_that_can_never_fit_before_a_busy_slot():
    problem = quota_problem(Limits(max_concurrent_jobs=1, tokens_per_month=100), Usage(running=1), Need(tokens=101))
    assert problem.startswith("this job trains about 101 tokens, more than the account's monthly budget of 100")


@pytest.mark.parametrize(("limits", "need", "fits"), [
    (Limits(), Need(tokens=10**12, gpu_hours=10**6), True),
    (Limits(tokens_per_month=100), Need(tokens=100), True),
    (Limits(tokens_per_month=100), Need(tokens=101), False),
    (Limits(gpu_hours_per_month=1), Need(gpu_hours=1.01), False),
    (Limits(gpu_hours_per_month=1, tokens_per_month=100), Need(gpu_hours=0.5, tokens=50), True),
])
def test_quota_never_fits(limits, need, fits):
    assert (quota_never_fits(limits, need) == "") is fits
