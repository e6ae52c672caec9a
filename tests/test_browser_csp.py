"""The pages under the Content-Security-Policy in Debian's Chromium (Playwright), served by the
production web server with DEBUG off: no violation, no script error, and the live parts (websocket,
charts, Swagger UI) still work."""

from pathlib import Path

import pytest

from tests.factories import make_dataset, make_job, make_metric, make_user
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]
RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__csp.push(e.violatedDirective + " blocked " + e.blockedURI + " at " + e.sourceFile + ":" + e.lineNumber);
});
"""


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_pages_log_no_csp_violation(web_server, live_base_model):
    from playwright.sync_api import expect, sync_playwright

    user = make_user("vera", is_staff=True, is_superuser=True)
    dataset = make_dataset(user)
    job = make_job(user, dataset=dataset, status="running")
    for step in range(1, 6):
        make_metric(job, step)
    problems: list[str] = []

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(30_000)
        page.add_init_script(RECORD_VIOLATIONS)
        page.on("console", lambda message: problems.append(f"console: {message.text}")
                if "Content Security Policy" in message.text or message.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
        page.on("response", lambda response: problems.append(f"{response.status}: {response.url}")
                if response.status >= 400 else None)

        def visit(path: str, ready=None) -> None:
            page.goto(web_server.url + path)
            if ready:
                ready()
            page.wait_for_timeout(300)  # late scripts (htmx polls, charts) get their turn
            problems.extend(f"{path}: {violation}" for violation in page.evaluate("window.__csp"))

        try:
            visit("/accounts/login/")
            page.get_by_label("Username").fill("vera")
            page.get_by_label("Password").fill("pw-vera")
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
            visit("/", lambda: expect(page.locator("#ws-state")).to_have_attribute("data-state", "open"))
            visit("/datasets/")
            visit(f"/datasets/{dataset.id}/")
            visit("/jobs/")
            visit(f"/jobs/{job.id}/", lambda: page.wait_for_function(
                "window.finetuneCharts && window.finetuneCharts.loss.data.datasets[0].data.length === 5"))
            visit("/jobs/new/")
            visit("/models/")
            visit("/models/playground/", lambda: expect(page.locator("#ws-state")).to_have_attribute(
                "data-state", "open"))
            visit("/accounts/tokens/")
            visit("/admin/")
            visit("/v1/docs", lambda: expect(page.locator(".swagger-ui .info .title")).to_contain_text(
                "finetune API"))
            expect(page.locator(".opblock").first).to_be_visible()
        finally:
            browser.close()
    assert problems == []
