"""The "explain this log" page and `manage.py explain_log`: paste any build, conversion or bootc log and get the
explanation a run's page gives. Any signed-in user may use the page; nothing is stored."""

import io
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.urls import reverse

CORPUS = Path(__file__).resolve().parents[1] / "data" / "failures"
URL = "/explain/"


def test_its_url_is_explain():
    assert reverse("portal:explain_log") == URL


def test_anonymous_is_sent_to_log_in(client_for, db):
    response = client_for(None).get(URL)
    assert response.status_code == 302 and "/login/" in response["Location"]
    response = client_for(None).post(URL, {"log": "error: x"})
    assert response.status_code == 302 and "/login/" in response["Location"]


@pytest.mark.parametrize("who", ["viewer", "outsider", "helpdesk", "developer"])
def test_any_signed_in_user_may_explain_a_log(client_for, personas, who):
    client = client_for(getattr(personas, who))
    assert client.get(URL).status_code == 200
    log = (CORPUS / "bib-no-dnf-797.log").read_text()
    response = client.post(URL, {"log": log})
    assert response.status_code == 200
    page = response.content.decode()
    assert "No dnf in the image" in page and "https://github.com/osbuild/bootc-image-builder/issues/650" in page


def test_a_success_with_lint_warnings_is_shown_as_warnings(client_for, personas):
    log = (CORPUS / "lint-nonfatal-playtron217.log").read_text()
    page = client_for(personas.viewer).post(URL, {"log": log, "outcome": "succeeded"}).content.decode()
    assert "Succeeded with warnings" in page and "border-warning" in page
    assert "Failed" not in page.split('id="explanation"')[1].split("</div></div>")[0]


def test_a_traceback_is_collapsed(client_for, personas):
    log = (CORPUS / "bib-install-config-ib623.log").read_text()
    page = client_for(personas.viewer).post(URL, {"log": log}).content.decode()
    assert "<details" in page and "Traceback (" in page
    assert "No bootc install configuration" in page


def test_an_empty_paste_says_so(client_for, personas):
    response = client_for(personas.viewer).post(URL, {"log": "   \n"})
    assert response.status_code == 400 and "Paste a log to explain." in response.content.decode()


@override_settings(EXPLAIN_LOG_MAX_CHARS=1000)
def test_a_paste_over_the_limit_is_refused_with_the_sizes(client_for, personas):
    response = client_for(personas.viewer).post(URL, {"log": "x" * 1500})
    page = response.content.decode()
    assert response.status_code == 400
    assert "1,500 characters" in page and "up to 1,000" in page and "explain_log" in page


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000)
def test_a_paste_past_the_request_limit_gets_the_too_big_page(client_for, personas):
    response = client_for(personas.viewer).post(URL, {"log": "x" * 5000})
    assert response.status_code == 400


def test_the_command_explains_a_file():
    out = io.StringIO()
    call_command("explain_log", str(CORPUS / "podman-heredoc-b3474.log"), stdout=out)
    text = out.getvalue()
    assert text.startswith("Failed at STEP 2: COPY <<eof /tmp/hello.")
    assert "Cause (heredoc-unsupported):" in text and "Fix:" in text


def test_the_command_says_success_with_warnings(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO((CORPUS / "lint-nonfatal-secureblue2211.log").read_text()))
    out = io.StringIO()
    call_command("explain_log", "-", "--succeeded", stdout=out)
    assert out.getvalue().startswith("Succeeded with warnings.")
    assert "Warning: Lint warning: nonempty-run-tmp" in out.getvalue()


def test_the_command_writes_json():
    out = io.StringIO()
    call_command("explain_log", str(CORPUS / "bib-disk-full-285.log"), "--json", stdout=out)
    assert '"cause": "disk-full"' in out.getvalue()


def test_the_command_refuses_a_missing_file():
    with pytest.raises(CommandError, match="Cannot read /no/such.log"):
        call_command("explain_log", "/no/such.log")
