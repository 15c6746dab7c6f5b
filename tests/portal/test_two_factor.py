"""The optional second factor (TOTP with backup codes): signing in with it, setting it up, a team that requires it of
its approvers and admins, and getting back in after losing the phone."""

import re
import time

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from portal.models import AuditEvent, Membership
from tests.portal.two_factor import enroll, sign_in, verified_client

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"


def signed_in_user(client):
    return client.session.get("_auth_user_id")


class TestSigningIn:
    def test_the_password_alone_does_not_sign_in_a_user_with_a_second_factor(self, personas):
        enroll(personas.developer)
        client = Client()
        response = client.post("/login/", {"username": "developer", "password": PASSWORD})
        assert response.status_code == 302 and response["Location"] == "/login/verify/"
        assert signed_in_user(client) is None
        assert client.get("/").status_code == 302

    def test_the_code_from_the_app_signs_in_verified(self, personas):
        app = enroll(personas.developer)
        client, response = sign_in("developer", app.code(ahead=1))
        assert response.status_code == 302 and response["Location"] == "/"
        assert signed_in_user(client) == str(personas.developer.pk)
        assert b"New backup codes" in client.get("/account/two-factor/").content  # offered to verified sign-ins only
        assert AuditEvent.objects.filter(action="auth.login", actor=personas.developer).exists()

    def test_a_code_cannot_be_used_twice(self, personas):
        app = enroll(personas.developer)
        code = app.code(ahead=1)
        assert sign_in("developer", code)[1].status_code == 302
        client, response = sign_in("developer", code)
        assert response.status_code == 200 and b"That code is not right" in response.content
        assert signed_in_user(client) is None

    def test_a_wrong_code_is_refused_audited_and_slows_the_next_tries(self, personas, settings):
        settings.OTP_TOTP_THROTTLE_FACTOR = settings.OTP_STATIC_THROTTLE_FACTOR = 60  # a first wait of a minute
        app = enroll(personas.developer)
        client, response = sign_in("developer", "000000")
        assert response.status_code == 200 and b"That code is not right" in response.content
        assert AuditEvent.objects.filter(action="auth.two_factor_failed", actor_name="developer").exists()
        response = client.post("/login/verify/", {"code": app.code(ahead=1)})  # even the right code, too soon
        assert b"Too many wrong codes: wait" in response.content
        assert signed_in_user(client) is None

    def test_a_backup_code_signs_in_once(self, personas):
        app = enroll(personas.developer)
        code = app.backup_codes[0]
        client, response = sign_in("developer", code.upper()[:4] + " " + code.upper()[4:])  # as people type it
        assert response.status_code == 302
        assert "9 are left" in client.get("/").content.decode()
        assert sign_in("developer", code)[1].status_code == 200

    def test_the_second_step_needs_the_first(self, personas):
        response = Client().post("/login/verify/", {"code": "123456"})
        assert response.status_code == 302 and response["Location"] == "/login/"

    def test_the_second_step_expires(self, personas):
        app = enroll(personas.developer)
        client = Client()
        client.post("/login/", {"username": "developer", "password": PASSWORD})
        session = client.session
        session["portal_pending_login"]["at"] = int(time.time()) - 301
        session.save()
        response = client.post("/login/verify/", {"code": app.code(ahead=1)})
        assert response.status_code == 302 and response["Location"] == "/login/"
        assert signed_in_user(client) is None

    def test_users_without_a_second_factor_sign_in_as_before(self, personas):
        response = Client().post("/login/", {"username": "viewer", "password": PASSWORD})
        assert response.status_code == 302 and response["Location"] == "/"


class TestSettingUp:
    def test_the_page_is_for_signed_in_users_each_their_own(self, personas, client_for):
        response = client_for(None).get("/account/two-factor/")
        assert response.status_code == 302 and response["Location"].startswith("/login/")
        for user in (personas.outsider, personas.viewer, personas.admin):
            page = client_for(user).get("/account/two-factor/").content.decode()
            assert f"Image%20Mode%20Portal:{user.username}" not in page  # the URI is only inside the QR code
            assert "Set up an authenticator app" in page

    def test_the_qr_code_is_drawn_on_the_server_and_the_secret_is_shown(self, personas, client_for):
        page = client_for(personas.viewer).get("/account/two-factor/").content.decode()
        svg = re.search(r"<svg[^>]*class=\"qr-code\".*?</svg>", page, re.S).group(0)
        assert "<path" in svg and "http" not in svg and "<script" not in svg
        assert re.search(r'id="totp-secret">([A-Z2-7]{4} ){7}[A-Z2-7]{4}<', page)

    def test_a_wrong_code_turns_nothing_on(self, personas, client_for):
        client = client_for(personas.viewer)
        client.get("/account/two-factor/")
        response = client.post("/account/two-factor/", {"code": "123456"})
        assert response.status_code == 400 and b"That code does not match" in response.content
        assert not TOTPDevice.objects.exists()

    def test_the_right_code_turns_it_on_and_shows_ten_backup_codes_once(self, personas, client_for):
        from tests.portal.two_factor import App

        client = client_for(personas.viewer)
        page = client.get("/account/two-factor/").content.decode()
        secret = re.search(r'id="totp-secret">([A-Z2-7 ]+)<', page).group(1)
        import base64

        app = App(personas.viewer, base64.b32decode(secret.replace(" ", "")).hex())
        response = client.post("/account/two-factor/", {"code": app.code()})
        assert response.status_code == 200
        codes = re.findall(r'<code class="backup-code">([a-z2-7]{8})</code>', response.content.decode())
        assert len(codes) == 10 and len(set(codes)) == 10
        assert TOTPDevice.objects.get(user=personas.viewer).confirmed
        assert AuditEvent.objects.filter(action="auth.two_factor_enroll", actor=personas.viewer).exists()
        again = client.get("/account/two-factor/").content.decode()
        assert codes[0] not in again and "Backup codes left: <strong>10</strong>" in again
        assert not any(code in AuditEvent.objects.get(action="auth.two_factor_enroll").summary for code in codes)

    def test_a_sign_in_without_the_second_factor_cannot_replace_or_remove_it(self, personas, client_for):
        enroll(personas.viewer)
        client = client_for(personas.viewer)  # signed in without the code (as before it was set up)
        page = client.get("/account/two-factor/").content.decode()
        assert "has not been verified" in page and "totp-secret" not in page
        assert client.post("/account/two-factor/", {"code": "123456"}).status_code == 302
        assert client.post("/account/two-factor/backup-codes/").status_code == 403
        assert client.post("/account/two-factor/remove/").status_code == 403
        assert TOTPDevice.objects.filter(user=personas.viewer).count() == 1

    def test_a_verified_sign_in_renews_backup_codes_and_turns_it_off(self, personas):
        app = enroll(personas.viewer)
        client = verified_client(app)
        old = app.backup_codes[0]
        response = client.post("/account/two-factor/backup-codes/")
        assert response.status_code == 200 and old not in response.content.decode()
        assert client.post("/account/two-factor/remove/").status_code == 302
        assert not TOTPDevice.objects.filter(user=personas.viewer).exists()
        assert not StaticDevice.objects.filter(user=personas.viewer).exists()
        assert AuditEvent.objects.filter(action="auth.two_factor_remove").exists()

    def test_a_sign_in_verified_later_on_the_page(self, personas, client_for):
        app = enroll(personas.viewer)
        client = client_for(personas.viewer)
        response = client.post("/account/two-factor/verify/", {"code": app.code(ahead=1)}, follow=True)
        assert b"This sign-in is verified" in response.content
        assert b"New backup codes" in response.content


def require_two_factor(team):
    type(team).objects.filter(pk=team.pk).update(require_two_factor=True)
    team.refresh_from_db()


class TestTeamRequirement:
    def test_only_the_teams_admins_turn_it_on(self, personas, client_for):
        url = f"/teams/{personas.team.slug}/two-factor/"
        assert client_for(None).post(url, {"required": "on"}).status_code == 302
        assert client_for(personas.outsider).post(url, {"required": "on"}).status_code == 404
        assert client_for(personas.viewer).post(url, {"required": "on"}).status_code == 403
        assert client_for(personas.approver).post(url, {"required": "on"}).status_code == 403
        personas.team.refresh_from_db()
        assert not personas.team.require_two_factor
        client = verified_client(enroll(personas.admin))
        response = client.post(url, {"required": "on"}, follow=True)
        assert b"now requires a second factor" in response.content
        personas.team.refresh_from_db()
        assert personas.team.require_two_factor
        event = AuditEvent.objects.get(action="team.two_factor")
        assert event.team == personas.team and event.detail == {"required": True}

    def test_an_admin_must_have_signed_in_with_one_to_turn_it_on(self, personas, client_for):
        response = client_for(personas.admin).post(f"/teams/{personas.team.slug}/two-factor/", {"required": "on"},
                                                   follow=True)
        assert b"Sign in with a second factor yourself before requiring one" in response.content
        personas.team.refresh_from_db()
        assert not personas.team.require_two_factor

    def test_approvers_and_admins_are_asked_to_set_it_up_when_they_sign_in(self, personas):
        require_two_factor(personas.team)
        for username in ("approver", "teamadmin"):
            client = Client()
            response = client.post("/login/", {"username": username, "password": PASSWORD})
            assert response.status_code == 302 and response["Location"] == "/account/two-factor/"
            page = client.get("/account/two-factor/").content.decode()
            assert "Platform requires approvers and admins to sign in with a second factor" in page
        response = Client().post("/login/", {"username": "developer", "password": PASSWORD})
        assert response["Location"] == "/"

    def test_admin_actions_are_refused_without_a_verified_second_factor(self, personas, client_for):
        require_two_factor(personas.team)
        url = f"/teams/{personas.team.slug}/members/"
        response = client_for(personas.admin).post(url, {"user": "outsider", "role": "viewer"})
        assert response.status_code == 403
        assert b"Platform requires approvers and admins to sign in with a second factor" in response.content
        assert not Membership.objects.filter(team=personas.team, user=personas.outsider).exists()
        client = verified_client(enroll(personas.admin))
        assert client.post(url, {"user": "outsider", "role": "viewer"}).status_code == 302
        assert Membership.objects.filter(team=personas.team, user=personas.outsider).exists()

    def test_superusers_are_held_to_it_too(self, personas, client_for):
        require_two_factor(personas.team)
        response = client_for(personas.superuser).post(f"/teams/{personas.team.slug}/members/",
                                                        {"user": "outsider", "role": "viewer"})
        assert response.status_code == 403

    def test_the_admin_site_needs_a_verified_second_factor_once_a_team_requires_one(self, personas, client_for):
        assert client_for(personas.superuser).get("/admin/portal/team/").status_code == 200
        require_two_factor(personas.team)
        response = client_for(personas.superuser).get("/admin/portal/team/", follow=True)
        assert response.redirect_chain[-1][0] == "/account/two-factor/"
        assert b"the admin site needs a sign-in verified with one" in response.content
        client = verified_client(enroll(personas.superuser))
        assert client.get("/admin/portal/team/").status_code == 200

    def test_other_teams_and_other_roles_are_not_affected(self, personas, client_for):
        require_two_factor(personas.team)
        assert client_for(personas.outsider).post(f"/teams/{personas.other_team.slug}/two-factor/").status_code == 403
        assert client_for(personas.viewer).get(f"/teams/{personas.team.slug}/").status_code == 200

    def test_the_banner_asks_those_it_applies_to(self, personas, client_for):
        require_two_factor(personas.team)
        assert b'id="two-factor-notice"' in client_for(personas.approver).get("/").content
        assert b'id="two-factor-notice"' not in client_for(personas.viewer).get("/").content
        verified = verified_client(enroll(personas.approver))
        assert b'id="two-factor-notice"' not in verified.get("/").content


class TestLostPhone:
    def test_an_operator_resets_it_with_a_command_and_the_user_signs_in_with_the_password(self, personas, capsys):
        enroll(personas.approver)
        call_command("two_factor_reset", "approver", reason="lost phone, asked in person")
        assert "Removed the second factor of approver" in capsys.readouterr().out
        assert not TOTPDevice.objects.filter(user=personas.approver).exists()
        event = AuditEvent.objects.get(action="auth.two_factor_remove")
        assert event.actor_name == "manage.py two_factor_reset" and event.detail["reason"] == "lost phone, asked in person"
        response = Client().post("/login/", {"username": "approver", "password": PASSWORD})
        assert response["Location"] == "/promotions/?view=inbox"  # signed in: an approver lands on the inbox

    def test_the_command_names_an_unknown_user(self, personas):
        with pytest.raises(CommandError, match="No user is called 'nobody'"):
            call_command("two_factor_reset", "nobody")

    def test_a_superuser_deleting_a_device_in_the_admin_site_is_audited(self, personas, client_for):
        enroll(personas.approver)
        device = TOTPDevice.objects.get(user=personas.approver)
        client = client_for(personas.superuser)
        response = client.post(f"/admin/otp_totp/totpdevice/{device.pk}/delete/", {"post": "yes"})
        assert response.status_code == 302
        assert AuditEvent.objects.get(action="admin.delete").object_type == "otp_totp.totpdevice"
