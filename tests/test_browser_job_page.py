"""The job page in Debian's Chromium (Playwright) against the production web server: the log follows new
lines pushed over the socket while the reader is at the bottom and offers a jump back when they scrolled
up; a job that succeeds links its model, evaluation, playground and download, live; numbers and times
are written for people."""

import re
import threading
import time
from pathlib import Path

import pytest
from django.db import connections

from tests.e2e import ARTIFACTS
from tests.factories import make_job, make_metric, make_user
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def in_thread(work):
    """Database work off Playwright's greenlet (Django would open, and keep, a second connection there)."""
    result = {}

    def run():
        try:
            result["value"] = work()
        except BaseException as error:  # re-raised below, in the test's thread
            result["error"] = error
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")


def log_lines(job_id: str, first: int, count: int) -> None:
    from jobs_app.services import job_event_add

    for number in range(first, first + count):
        job_event_add(job_id=job_id, message=f"log line {number}")


def succeed(job):
    from jobs_app.services import job_transition
    from models_app.models import Evaluation, FineTunedModel

    model = FineTunedModel.objects.create(id=f"ft:tiny-llama:topics:{job.id[-6:]}", owner=job.owner, job=job,
                                          project_id=job.project_id,
                                          base_model=job.base_model, name="topics", adapter="lora", version=1,
                                          adapter_path="models/x/adapter", artifact_files=[])
    evaluation = Evaluation.objects.create(id=f"eval-{job.id[-6:]}", owner=job.owner, model=model,
                                           project_id=model.project_id,
                                           base_model=job.base_model, dataset=job.dataset, kind="auto")
    job_transition(job_id=job.id, to="succeeded", message="Job succeeded: 24 steps, 12,345 tokens")
    return model, evaluation


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_log_follows_jump_button_finished_links_and_numbers(web_server, live_base_model):
    from playwright.sync_api import expect, sync_playwright

    user = make_user("lin")
    job = make_job(user, status="running")
    log_lines(job.id, 1, 40)  # more than the box shows
    make_metric(job, 12, 24, tokens=123456)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(30_000)
        log = page.locator("#job-log")
        jump = page.locator("#job-log-jump")

        def at_bottom() -> bool:
            return log.evaluate("box => box.scrollHeight - box.scrollTop - box.clientHeight < 2")

        try:
            page.goto(f"{web_server.url}/jobs/{job.id}/")
            page.get_by_label("Username").fill("lin")
            page.get_by_label("Password").fill("pw-lin")
            page.get_by_role("button", name="Log in").click()
            expect(page.locator("#ws-state")).to_have_attribute("data-state", "open")

            # Numbers for people: separators, a relative time with the exact one in its title.
            expect(page.locator(f"#job-progress-{job.id}")).to_contain_text("123,456 tokens")
            expect(page.locator(f"#job-progress-{job.id} .step")).to_have_text("12")
            created = page.locator("dl.facts time[data-relative]").first
            expect(created).to_have_text(re.compile(r"^(just now|\d+ seconds? ago)$"))
            assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", created.get_attribute("title"))

            # The log opens at its end, and follows new lines while the reader stays there.
            assert log.evaluate("box => box.scrollHeight > box.clientHeight")  # it does scroll
            assert at_bottom()
            in_thread(lambda: log_lines(job.id, 41, 3))
            expect(log.locator("li").last).to_contain_text("log line 43")
            page.wait_for_function("box => box.scrollHeight - box.scrollTop - box.clientHeight < 2",
                                   arg=log.element_handle())
            expect(jump).to_be_hidden()

            # Scrolled up, the reader keeps their place; a button counts what came and jumps to it.
            log.evaluate("box => { box.scrollTop = 0; box.dispatchEvent(new Event('scroll')); }")
            in_thread(lambda: log_lines(job.id, 44, 2))
            expect(log.locator("li").last).to_contain_text("log line 45")
            expect(jump).to_be_visible()
            expect(jump).to_have_text("↓ 2 new lines: jump to the latest")
            assert log.evaluate("box => box.scrollTop") == 0
            jump.click()
            expect(jump).to_be_hidden()
            assert at_bottom()

            # The job succeeds: the status partial comes over the socket with where to go next,
            # and the log shows its last line.
            model, evaluation = in_thread(lambda: succeed(job))
            expect(page.locator("#job-status [data-status]")).to_have_text("Succeeded")
            expect(page.locator("#next-model")).to_have_attribute("href", f"/models/{model.id}/")
            expect(page.locator("#next-model")).to_have_text("topics@1.0.0")
            expect(page.locator("#next-evaluation")).to_have_attribute("href", f"/models/evaluations/{evaluation.id}/")
            expect(page.locator("#next-playground")).to_have_attribute(
                "href", re.compile(r"^/models/playground/\?model=ft%3Atiny-llama%3Atopics%3A"))
            expect(page.locator("#next-download")).to_have_attribute(
                "href", f"/v1/models/{model.id}/download?artifact=adapter")
            expect(log.locator("li").last).to_contain_text("Job succeeded: 24 steps, 12,345 tokens")
            expect(log.locator("li").last).to_be_in_viewport()
            assert at_bottom()
            page.locator("#next-playground").click()
            expect(page.get_by_label("Left model")).to_have_value(model.id)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / f"browser-job-page-failure-{int(time.time())}.png"))
            raise
        finally:
            browser.close()
