"""One browser session in Debian's Chromium (Playwright) against the web server and a real worker:
log in, a chunked upload that resumes after a lost reply, the dataset page going ready live,
the wizard, a live training run on the job page and on the dashboard, reload mid-run, cancel."""

import hashlib
import re
import time
from pathlib import Path

import pytest

from datasets_app.models import DatasetUpload
from jobs_app.models import FineTuneJob
from tests.e2e import ARTIFACTS, wait_for
from tests.factories import jsonl_bytes, make_user
from workers.sample_data import classification_rows

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-gpu"]


def page_logged_in(browser, url: str, username: str):
    """A new page of ``browser`` at ``url`` after logging in there as ``username`` (a ``make_user`` user)."""
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(30_000)
    page.goto(url)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill("pw-" + username)
    page.get_by_role("button", name="Log in").click()
    return page


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_upload_wizard_live_run_reload_and_cancel(web_server, live_base_model, worker, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    make_user("ada")
    training = tmp_path / "classify.jsonl"
    training.write_bytes(jsonl_bytes(classification_rows(24)))
    job_id = None

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1280, "height": 1100}).new_page()
        page.set_default_timeout(30_000)
        try:
            # Log in: any page sends an anonymous user to the login form first.
            page.goto(web_server.url + "/")
            expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
            page.get_by_label("Username").fill("ada")
            page.get_by_label("Password").fill("pw-ada")
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()

            # Upload a dataset in small chunks through the resumable API; the reply to the second
            # chunk is lost on the way back (the server has it), so the page must ask the server
            # for its offset and go on from there. Then watch it become ready over the socket.
            page.get_by_role("link", name="Datasets").click()
            chunks = []

            def lose_second_reply(route):
                chunks.append(route.request.url)
                if len(chunks) == 2:
                    route.fetch()
                    route.abort()
                else:
                    route.continue_()

            page.route("**/v1/datasets/uploads/*/chunk*", lose_second_reply)
            page.locator("#upload-form").evaluate("form => form.setAttribute('data-chunk-bytes', '700')")
            page.set_input_files("#upload-file", str(training))
            page.get_by_role("button", name="Upload").click()
            expect(page).to_have_url(re.compile(r"/datasets/file-[^/]+/$"))
            # a worker validates it now (a chunked upload is never checked inline): allow for a busy one
            expect(page.locator("#dataset-status [data-status]")).to_have_text("ready", timeout=60_000)
            expect(page.get_by_text("24 rows read, 0 errors, 0 warnings.")).to_be_visible()
            size = training.stat().st_size
            offsets = [int(re.search(r"offset=(\d+)", url).group(1)) for url in chunks]
            assert offsets == sorted(set(offsets)) and offsets[-1] < size and len(offsets) == -(-size // 700)
            page.unroute("**/v1/datasets/uploads/*/chunk*")
            expect(page.locator("#token-histogram")).to_have_attribute("data-drawn", "1", timeout=60_000)

            # The wizard: dataset, then model and hyperparameters checked as typed, then review.
            page.get_by_role("link", name="Fine-tune on this dataset").click()
            expect(page.get_by_label("Training dataset")).to_have_value(re.compile(r"^file-"))
            page.get_by_role("button", name=re.compile("Next: model")).click()
            page.get_by_text("Advanced options").click()
            epochs = page.get_by_label("Epochs")
            epochs.fill("0")
            expect(page.locator("#error-n_epochs")).to_have_text("n_epochs must be from 1 to 100, not 0")
            epochs.fill("100")
            expect(page.locator("#error-n_epochs")).to_have_text("")
            page.get_by_label("Batch size").fill("4")
            page.get_by_label("Learning rate", exact=True).fill("0.003")
            page.get_by_role("button", name=re.compile("Next: review")).click()
            # the first review loads the tokenizer for the loss-mask dry run in the web process
            expect(page.locator("#estimate")).to_contain_text("600 steps", timeout=60_000)
            expect(page.locator("#estimate-time")).to_contain_text("unknown until the first steps")
            expect(page.locator("#loss-mask .mask-row").first.locator("span.trained").first).to_be_visible()
            page.get_by_role("button", name=re.compile("Back")).or_(page.get_by_role("link", name="← Back")).click()
            expect(page.get_by_label("Epochs")).to_have_value("100")  # going back keeps the input
            page.get_by_role("button", name=re.compile("Next: review")).click()
            page.get_by_role("button", name="Start fine-tuning").click()

            # The live page: progress bar and chart move from the real run, with no reload.
            expect(page).to_have_url(re.compile(r"/jobs/ftjob-[^/]+/$"))
            job_id = page.url.rstrip("/").rsplit("/", 1)[1]
            page.evaluate("window.__notReloaded = true")
            expect(page.locator("#ws-state")).to_have_attribute("data-state", "open")
            expect(page.locator("#job-status [data-status]")).to_have_text("Running", timeout=60_000)
            progress = page.locator(f"#job-progress-{job_id} progress")
            wait_for(lambda: int(progress.get_attribute("value")) >= 5, timeout=60, what="progress to step 5")
            wait_for(lambda: page.evaluate("window.finetuneCharts.loss.data.datasets[0].data.length") >= 5,
                     timeout=30, what="loss chart points")
            assert page.evaluate("window.__notReloaded") is True
            expect(page.locator("#job-log")).to_contain_text("Fine-tuning started")

            # Reload mid-run: the whole history first, then it keeps going live.
            seen = int(progress.get_attribute("value"))
            page.reload()
            expect(page.locator("#job-log")).to_contain_text(f"Created fine-tuning job: {job_id}")
            assert page.locator("#job-metrics li").count() >= seen
            assert page.evaluate("window.finetuneCharts.loss.data.datasets[0].data.length") >= seen
            expect(page.locator("#ws-state")).to_have_attribute("data-state", "open")
            after = int(progress.get_attribute("value"))
            wait_for(lambda: int(progress.get_attribute("value")) > max(after, 20), timeout=60,
                     what="live progress after reload")
            page.screenshot(path=str(ARTIFACTS / "live_job.png"))

            # The dashboard in a second tab: the job's progress bar moves over the dashboard's
            # socket, with no reload and no polling while the socket is up.
            dashboard = browser.new_context(storage_state=page.context.storage_state()).new_page()
            polls = []
            dashboard.on("request", lambda request: polls.append(request.url)
                         if "/dashboard/active-jobs/" in request.url else None)
            dashboard.goto(web_server.url + "/")
            dashboard.evaluate("window.__notReloaded = true")
            expect(dashboard.locator("#ws-state")).to_have_attribute("data-state", "open")
            bar = dashboard.locator(f"#job-progress-{job_id} progress")
            first = int(bar.get_attribute("value"))
            wait_for(lambda: int(bar.get_attribute("value")) > first + 2, timeout=60, what="dashboard progress")
            assert dashboard.evaluate("window.__notReloaded") is True and polls == []
            dashboard.context.close()

            # The server restarts mid-run: the page reconnects with its last seq and gets the gap.
            web_server.stop()
            expect(page.locator("#ws-state")).to_have_attribute("data-state", "offline")
            before = int(progress.get_attribute("value"))
            time.sleep(2)  # the run goes on while no server can push to the page
            web_server.start()
            expect(page.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=30_000)
            wait_for(lambda: int(progress.get_attribute("value")) > before + 3, timeout=60,
                     what="progress after the reconnect")
            seqs = sorted(int(s) for s in page.eval_on_selector_all(
                "#job-log li, #job-metrics li", "items => items.map(i => i.dataset.seq)"))
            assert seqs == list(range(1, seqs[-1] + 1)), "a gap or a duplicate in the event sequence"

            # Cancel, confirming the dialog; the status updates in place.
            page.once("dialog", lambda dialog: dialog.accept())
            page.locator("#cancel-job").click()
            expect(page.locator("#job-status [data-status]")).to_have_text("Cancelled")
            expect(page.locator("#job-log")).to_contain_text("Job cancelled")
            assert page.locator("#job-metrics li").count() < 600
        except Exception:
            page.screenshot(path=str(ARTIFACTS / f"browser-failure-{int(time.time())}.png"))
            raise
        finally:
            browser.close()
    # The database is read outside Playwright's event loop: inside it Django would use (and
    # leave open) a second connection, which keeps the test database from being dropped.
    assert FineTuneJob.objects.get(pk=job_id).status == FineTuneJob.Status.CANCELLED
    upload = DatasetUpload.objects.get()
    assert upload.status == "completed" and upload.received == training.stat().st_size
    assert upload.dataset.sha256 == hashlib.sha256(training.read_bytes()).hexdigest()
