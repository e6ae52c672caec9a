"""The playground in Debian's Chromium (Playwright) against the web server and a real inference worker:
from a model's page to both replies streamed side by side over the websocket."""

import re
import time
from pathlib import Path

import pytest

from models_app.services import fine_tuned_model_create
from tests.e2e import ARTIFACTS
from tests.factories import make_job, make_user
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS
from workers.sample_data import classification_rows

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_model_page_to_playground_streams_both_replies(web_server, live_base_model, trained_adapter,
                                                       inference_worker):
    from playwright.sync_api import expect, sync_playwright

    user = make_user("grace")
    model = fine_tuned_model_create(job=make_job(user, status="succeeded"), adapter_dir=trained_adapter)
    prompt, answer = classification_rows(24)[0]["messages"]

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(30_000)
        try:
            page.goto(f"{web_server.url}/models/{model.id}/")
            page.get_by_label("Username").fill("grace")
            page.get_by_label("Password").fill("pw-grace")
            page.get_by_role("button", name="Log in").click()
            page.get_by_role("link", name="Open in playground").click()
            expect(page).to_have_url(re.compile(r"/models/playground/\?model="))
            expect(page.get_by_label("Left model")).to_have_value(model.id)
            expect(page.get_by_label("Right model")).to_have_value("tiny-llama")
            expect(page.locator("#ws-state")).to_have_attribute("data-state", "open")

            page.get_by_label("Prompt").fill(prompt["content"])
            page.get_by_label("Max tokens").fill("12")
            requests = []
            page.on("request", lambda request: requests.append(request.method))
            page.get_by_role("button", name="Generate both").click()

            # a cold worker loads both models first
            expect(page.locator("#playground-left-status")).to_have_attribute("data-state", "done", timeout=90_000)
            expect(page.locator("#playground-right-status")).to_have_attribute("data-state", "done",
                                                                               timeout=90_000)
            expect(page.locator("#playground-left-text")).to_have_text(answer["content"])
            expect(page.locator("#playground-right-status")).to_contain_text("12 tokens, max tokens reached")
            assert page.locator("#playground-right-text").inner_text() != ""
            expect(page.locator("#playground-left h2")).to_contain_text(model.id)
            assert "POST" not in requests  # it went over the websocket, not a form post
            page.screenshot(path=str(ARTIFACTS / "playground.png"))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / f"playground-failure-{int(time.time())}.png"))
            raise
        finally:
            browser.close()
