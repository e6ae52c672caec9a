"""Settings from the environment: the production env passes `check --deploy`, headers, bad values."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The production environment README's "Production deployment" documents (TLS ends at a proxy).
PRODUCTION_ENV = {
    "SECRET_KEY": "k3Q9wZ-production-like-secret-for-the-deploy-check-0123456789abcdefXYZ",
    "ALLOWED_HOSTS": "finetune.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://finetune.example.com",
    "SESSION_COOKIE_SECURE": "1",
    "CSRF_COOKIE_SECURE": "1",
    "SECURE_SSL_REDIRECT": "1",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "SECURE_HSTS_PRELOAD": "1",
    "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO,https",
}
SECURITY_NAMES = {*PRODUCTION_ENV, "DEBUG"}


def manage(tmp_path, env: dict, *args: str) -> subprocess.CompletedProcess:
    import os

    base = {name: value for name, value in os.environ.items() if name not in SECURITY_NAMES}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**base, "DATA_DIR": str(tmp_path), **env}, timeout=120)


def test_check_deploy_is_clean_with_the_documented_production_env(tmp_path):
    result = manage(tmp_path, PRODUCTION_ENV, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout + result.stderr


def test_check_deploy_names_what_is_missing_without_it(tmp_path):
    result = manage(tmp_path, {"SECRET_KEY": PRODUCTION_ENV["SECRET_KEY"]}, "check", "--deploy")
    output = result.stdout + result.stderr
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in output
    assert "drf_spectacular" not in output  # operationIds are unique


def test_a_mistyped_switch_is_an_error_naming_it(tmp_path):
    result = manage(tmp_path, {"SESSION_COOKIE_SECURE": "ture"}, "check")
    assert result.returncode != 0 and "SESSION_COOKIE_SECURE='ture': write 1 or 0" in result.stderr
    result = manage(tmp_path, {"SECURE_HSTS_SECONDS": "a year"}, "check")
    assert result.returncode != 0 and "SECURE_HSTS_SECONDS='a year': write a whole number" in result.stderr
    result = manage(tmp_path, {"API_RATE_LIMIT": "lots"}, "check")
    assert result.returncode != 0 and "API_RATE_LIMIT: 'lots' is not a rate" in result.stderr
    result = manage(tmp_path, {"SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO"}, "check")
    assert result.returncode != 0 and "SECURE_PROXY_SSL_HEADER must be HEADER,VALUE" in result.stderr


def test_debug_is_off_without_the_variable(tmp_path):
    show = "from django.conf import settings; print(settings.DEBUG, settings.SESSION_COOKIE_SECURE)"
    assert manage(tmp_path, {}, "shell", "-v", "0", "-c", show).stdout.split() == ["False", "False"]
    assert manage(tmp_path, {"DEBUG": "1"}, "shell", "-v", "0", "-c", show).stdout.split() == ["True", "False"]


@pytest.mark.django_db
def test_pages_and_api_carry_a_strict_content_security_policy(client):
    from tests.factories import make_user

    client.force_login(make_user())
    for url in ("/", "/accounts/login/", "/v1/docs", "/v1/models"):
        policy = client.get(url)["Content-Security-Policy"]
        directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
        assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'", url
        assert directives["object-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
        assert "unsafe" not in policy and "http" not in policy, policy


@pytest.mark.django_db
def test_docs_load_the_vendored_swagger_ui_and_no_inline_code(client):
    page = client.get("/v1/docs").content.decode()
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in page and "cdn" not in page.lower()
    assert "<style" not in page and "<script>" not in page and 'src="/v1/docs?script="' in page
    script = client.get("/v1/docs?script=")
    assert script.status_code == 200 and "SwaggerUIBundle" in script.content.decode()
    assert (ROOT / "static/vendor/swagger-ui/swagger-ui-bundle.js").exists()


def test_templates_have_no_inline_script_style_or_handler():
    import re

    offending = []
    for template in (ROOT / "templates").rglob("*.html"):
        text = template.read_text()
        for pattern in (r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", r"<style", r"\sstyle=",
                        r"\son[a-z]+=", r"hx-on", r"javascript:", r'hx-trigger="[^"]*\['):
            offending += [f"{template.relative_to(ROOT)}: {m.group(0)}" for m in re.finditer(pattern, text)]
    assert offending == []


def test_every_variable_the_settings_read_is_listed_in_env_example():
    read = set()
    for path in (ROOT / "finetune_site").glob("*.py"):
        read |= set(re.findall(r'env_(?:str|int|bool|float|list|rate)\(\s*"([A-Z][A-Z0-9_]+)"', path.read_text()))
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), flags=re.M))
    assert read and read - documented == set()
