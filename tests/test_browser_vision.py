"""A vision model's playground in Debian's Chromium (Playwright) against the web server and a real
inference worker: an image chosen on the model's page comes back ranked, without a page load."""

from pathlib import Path

import pytest

from tests.factories import image_bytes, make_user, make_vision_model
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, page_logged_in

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_choosing_an_image_shows_the_tuned_classes_and_why_there_is_no_base(web_server, live_base_model,
                                                                           inference_worker, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    model = make_vision_model(make_user("hedy"))
    image = tmp_path / "owl.png"
    image.write_bytes(image_bytes("owls", 2))

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = page_logged_in(browser, f"{web_server.url}/models/{model.id}/", "hedy")
            expect(page.get_by_role("link", name="Open in playground")).to_have_count(0)
            loads = []
            page.on("load", lambda: loads.append(1))
            page.get_by_label("Drop an image here or choose one", exact=False).set_input_files(str(image))
            tuned = page.locator("#tuned-predictions li")
            expect(tuned).to_have_count(3, timeout=60_000)  # a cold worker loads the classifier first
            expect(page.locator("#no-base")).to_contain_text("trained from scratch")
            assert sorted(tuned.locator(".label").all_inner_texts()) == ["cats", "dogs", "owls"]
            assert not loads  # swapped in by htmx
        finally:
            browser.close()
