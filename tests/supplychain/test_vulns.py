"""Advisories: an OSV feed written by the tests, the exact CVEs expected for builds whose packages are known (dpkg's
version rules, not string comparison), a feed update that reaches a digest already in prod with no rebuild, and bad
feeds refused with nothing half imported."""

import io
import json
import zipfile

import jsonschema
import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from builds.supplychain import services, vulns
from builds.supplychain.models import Advisory, AdvisoryFeed, AffectedPackage
from hosts.models import Host, HostState
from portal import events, notifications, registry
from portal.models import Action, Event
from tests.supplychain.osv import EXPECTED, FEED, JQ_ADVISORY, csaf_vex, feed_bytes, record


def findings(build):
    return {(f.advisory.cves[0], f.package, f.fixed) for f in vulns.findings_for(build)}


def test_each_build_gets_exactly_the_cves_its_package_versions_are_affected_by(personas, promo):
    services.feed_import(name="debian-bookworm", data=feed_bytes(), source="osv.json", user=personas.superuser)
    for build, seed in zip(promo.builds, promo.seeds, strict=True):
        assert findings(build) == EXPECTED[seed.version], seed.version


def test_findings_come_most_severe_first_with_the_fixed_in_version(personas, promo):
    services.feed_import(name="debian-bookworm", data=feed_bytes(), source="osv.json", user=personas.superuser)
    ordered = vulns.findings_for(promo.builds[0])
    assert [(f.advisory.severity, f.package, f.installed, f.fixed) for f in ordered] == [
        ("critical", "openssl", "3.0.11-1", "3.0.13-1"), ("low", "curl", "7.88.1-10", "1:7.0-1")]


@pytest.mark.parametrize("package_format, installed, fixed, affected", [
    ("dpkg", "1.0~rc1-1", "1.0-1", True),  # a tilde sorts before anything
    ("dpkg", "2:1.0-1", "1:9.9-1", False),  # a higher epoch wins
    ("rpm", "3.0.7-27.el9", "3.0.7-28.el9", True),
    ("rpm", "1.10.0-1", "1.9.0-1", False),  # 10 > 9
    ("apk", "3.1.4-r5", "3.1.4-r6", True),
])
def test_versions_compare_with_each_package_managers_own_rules(package_format, installed, fixed, affected):
    assert vulns.affected_by(package_format, installed, [{"introduced": "0", "fixed": fixed}], [])[0] is affected


def test_a_feed_update_adds_a_cve_to_a_digest_already_in_prod_and_the_cve_page_lists_it(personas, promo, client_for):
    services.feed_import(name="debian-bookworm", data=feed_bytes(), source="osv.json", user=personas.superuser)
    promo.push()
    newest = promo.builds[2]
    promo.promote(newest, "dev")
    promo.promote(newest, "test", approvers=[personas.approver])
    promo.promote(newest, "prod", approvers=[personas.approver, personas.approver2])
    assert "CVE-2026-1006" not in {f.advisory.cves[0] for f in vulns.findings_for(newest)}

    services.feed_import(name="debian-bookworm", data=feed_bytes([*FEED, JQ_ADVISORY]), source="osv-2.json",
                         user=personas.superuser)
    assert ("CVE-2026-1006", "jq", "1.6-3") in findings(newest)  # no rebuild: the same build row, the new feed
    page = client_for(personas.viewer).get("/advisories/CVE-2026-1006/")
    assert page.status_code == 200
    text = page.content.decode()
    assert newest.short_digest in text and "prod" in text and "1.6-3" in text
    assert "1 build, 1 held by a stage now" in text
    hosts_url = registry.fragment_url("build.hosts", newest.pk)  # the hosts app says who runs it
    assert hosts_url in text
    Host.objects.create(team=personas.team, name="web-01", address="127.0.0.1", port=1, host_key="ssh-ed25519 AAAA",
                        state=HostState.UP_TO_DATE, is_bootc=True, booted_digest=newest.digest,
                        tracked_image=promo.ref("prod"), status_at=timezone.now())
    assert "1 host runs this digest" in client_for(personas.viewer).get(hosts_url).content.decode()


def test_a_feed_update_that_finds_a_cve_in_what_the_stages_hold_tells_the_team_once(
        personas, promo, eager_tasks, mailoutbox, django_capture_on_commit_callbacks):
    services.feed_import(name="debian-bookworm", data=feed_bytes(), source="osv.json", user=personas.superuser)
    promo.push()
    newest = promo.builds[2]
    promo.promote(newest, "dev")
    promo.promote(newest, "test", approvers=[personas.approver])
    mailoutbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        services.feed_import(name="debian-bookworm", data=feed_bytes([*FEED, JQ_ADVISORY]), source="osv-2.json",
                             user=personas.superuser)
    [event] = Event.objects.filter(type="vulnerabilities.found")
    jsonschema.Draft202012Validator(events.schema_for(event.type),
                                    format_checker=jsonschema.FormatChecker()).validate(event.envelope)
    assert event.team == personas.team
    data = event.envelope["data"]
    assert data["feed"] == "debian-bookworm"
    # Only what is new: bash's CVE-2026-1002 was known before this import, jq's is not.
    assert [(s["stage"], s["digest"], [(a["id"], a["package"], a["installed"], a["fixed"]) for a in s["advisories"]])
            for s in data["stages"]] == [(stage, newest.digest, [("DSA-9006-1", "jq", "1.6-2", "1.6-3")])
                                         for stage in ("dev", "test")]
    assert data["stages"][0]["advisories"][0]["url"].endswith("/advisories/DSA-9006-1/")
    mails = [m for m in mailoutbox if "new advisory" in m.subject]  # one to each approver and admin of the team
    recipients = {address for m in mails for address in m.to}
    assert recipients == {u.email for u in notifications.members_with(personas.team, Action.APPROVE)}
    assert personas.approver.email in recipients and personas.developer.email not in recipients
    assert "1 new advisory for what Platform's stages hold (dev, test)" in mails[0].subject
    assert "critical: DSA-9006-1 in jq 1.6-2, fixed in 1.6-3" in mails[0].body

    with django_capture_on_commit_callbacks(execute=True):  # the same feed again finds nothing new
        services.feed_import(name="debian-bookworm", data=feed_bytes([*FEED, JQ_ADVISORY]), source="osv-3.json",
                             user=personas.superuser)
    assert Event.objects.filter(type="vulnerabilities.found").count() == 1


NGINX_ADVISORY = record("DSA-9007-1", "CVE-2026-1007", "nginx", "1.22.1-10", severity="high")


def boot(team, name, build):
    return Host.objects.create(team=team, name=name, address="127.0.0.1", port=1, host_key="ssh-ed25519 AAAA",
                               state=HostState.DRIFT, is_bootc=True, booted_digest=build.digest, status_at=timezone.now())


def test_a_feed_update_that_finds_a_cve_in_what_hosts_boot_and_no_stage_holds_tells_the_operators_once(
        personas, promo, eager_tasks, mailoutbox, django_capture_on_commit_callbacks):
    services.feed_import(name="debian-bookworm", data=feed_bytes(), source="osv.json", user=personas.superuser)
    promo.push()
    older, newest = promo.builds[1], promo.builds[2]  # nginx 1.22.1-9 and 1.24.0-1
    promo.promote(newest, "dev")
    for name in ("web-01", "web-02", "web-03"):  # left behind on build 2, which no stage holds any more
        boot(personas.team, name, older)
    boot(personas.team, "web-04", newest)  # on what dev holds: the approvers' notice covers it
    boot(personas.other_team, "theirs", older)  # another team's host on this team's build: not this team's to hear
    mailoutbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        services.feed_import(name="debian-bookworm", data=feed_bytes([*FEED, JQ_ADVISORY, NGINX_ADVISORY]),
                             source="osv-2.json", user=personas.superuser)
    [event] = Event.objects.filter(type="vulnerabilities.running")
    jsonschema.Draft202012Validator(events.schema_for(event.type),
                                    format_checker=jsonschema.FormatChecker()).validate(event.envelope)
    assert event.team == personas.team
    [row] = event.envelope["data"]["digests"]
    assert (row["digest"], row["hosts"], row["build"]["number"]) == (older.digest, 3, 2)
    assert [(a["id"], a["package"], a["installed"], a["fixed"]) for a in row["advisories"]] == [
        ("DSA-9007-1", "nginx", "1.22.1-9", "1.22.1-10")]
    [found] = Event.objects.filter(type="vulnerabilities.found")  # dev's digest: jq, for the approvers
    assert [s["stage"] for s in found.envelope["data"]["stages"]] == ["dev"]
    mails = [m for m in mailoutbox if "hosts on an image no stage holds" in m.subject]
    recipients = {address for m in mails for address in m.to}
    assert recipients == {u.email for u in notifications.members_with(personas.team, Action.OPERATE)}
    assert personas.operator.email in recipients and personas.approver.email not in recipients
    assert "1 new advisory for 3 of Platform's hosts on an image no stage holds" in mails[0].subject
    assert "build 2" in mails[0].body and "booted by 3 hosts" in mails[0].body
    assert "high: DSA-9007-1 in nginx 1.22.1-9, fixed in 1.22.1-10" in mails[0].body

    with django_capture_on_commit_callbacks(execute=True):  # the same feed again finds nothing new
        services.feed_import(name="debian-bookworm", data=feed_bytes([*FEED, JQ_ADVISORY, NGINX_ADVISORY]),
                             source="osv-3.json", user=personas.superuser)
    assert Event.objects.filter(type="vulnerabilities.running").count() == 1


def test_hosts_on_a_digest_a_stage_holds_get_no_running_notice(personas, promo, eager_tasks,
                                                                django_capture_on_commit_callbacks):
    services.feed_import(name="debian-bookworm", data=feed_bytes(), source="osv.json", user=personas.superuser)
    promo.push()
    older = promo.builds[1]
    promo.promote(older, "dev")
    boot(personas.team, "web-01", older)
    with django_capture_on_commit_callbacks(execute=True):
        services.feed_import(name="debian-bookworm", data=feed_bytes([*FEED, NGINX_ADVISORY]), source="osv-2.json",
                             user=personas.superuser)
    assert Event.objects.filter(type="vulnerabilities.found").count() == 1
    assert not Event.objects.filter(type="vulnerabilities.running").exists()


def test_hosts_on_the_member_of_a_manifest_list_a_stage_holds_get_no_running_notice(
        personas, promo, eager_tasks, django_capture_on_commit_callbacks):
    from builds.models import Build
    from builds.releases.models import StageHistory
    from portal.models import RunKind
    from portal.services import run_create, run_finish, run_start

    services.feed_import(name="debian-bookworm", data=feed_bytes(), source="osv.json", user=personas.superuser)
    member = promo.builds[1]  # linux/amd64, with nginx 1.22.1-9
    run = run_create(kind=RunKind.BUILD, title="Build 4", team=personas.team, started_by=personas.developer)
    run_start(run)
    run_finish(run, status="succeeded")
    listed = Build.objects.create(definition=promo.definition, revision=member.revision, number=4, run=run,
                                  platform="linux/amd64,linux/arm64", is_manifest_list=True,
                                  repository=promo.repository, digest="sha256:" + "4" * 64)
    Build.objects.filter(pk=member.pk).update(manifest_list=listed)
    StageHistory.objects.create(stage=promo.stages["dev"], definition=promo.definition, digest=listed.digest,
                                build=listed)
    boot(personas.team, "web-01", member)  # bootc boots the list's amd64 member
    with django_capture_on_commit_callbacks(execute=True):
        services.feed_import(name="debian-bookworm", data=feed_bytes([*FEED, NGINX_ADVISORY]), source="osv-2.json",
                             user=personas.superuser)
    assert not Event.objects.filter(type="vulnerabilities.running").exists()


@pytest.mark.parametrize("data, reason", [
    (b"not json", "is not JSON"),
    (json.dumps({"summary": "no id"}).encode(), 'no "id"'),
    (json.dumps([{"id": "X-1", "affected": "openssl"}]).encode(), '"affected" must be a list'),
    (json.dumps([]).encode(), "no OSV records"),
    (b"PK\x03\x04broken", "not one"),
])
def test_a_feed_that_is_not_osv_is_refused_and_the_previous_import_stays_whole(personas, data, reason):
    services.feed_import(name="debian-bookworm", data=feed_bytes(), source="osv.json", user=personas.superuser)
    with pytest.raises(ValidationError, match=reason):
        services.feed_import(name="debian-bookworm", data=data, source="bad.json", user=personas.superuser)
    feed = AdvisoryFeed.objects.get(name="debian-bookworm")
    assert feed.source == "osv.json" and feed.advisories.count() == len(FEED)


def test_a_record_that_breaks_half_way_through_a_feed_imports_nothing(personas):
    broken = [*FEED[:3], {"id": "DSA-9999-1", "affected": [{"package": {}}]}]
    with pytest.raises(ValidationError, match="no package name"):
        services.feed_import(name="debian-bookworm", data=feed_bytes(broken), source="x.json", user=personas.superuser)
    assert not Advisory.objects.exists() and not AffectedPackage.objects.exists()
    assert not AdvisoryFeed.objects.exists()


def test_a_feed_over_the_limit_is_refused_with_the_setting_that_raises_it(personas, settings):
    settings.SUPPLY_CHAIN_FEED_MAX_BYTES = 1000
    with pytest.raises(ValidationError, match="SUPPLY_CHAIN_FEED_MAX_BYTES"):
        services.feed_import(name="big", data=b" " * 1001, source="big.json", user=personas.superuser)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("all.json", b" " * 5000)  # small compressed, big unpacked
    with pytest.raises(ValidationError, match="unpacks to"):
        services.feed_import(name="big", data=archive.getvalue(), source="all.zip", user=personas.superuser)


def test_osv_zip_archives_import_like_osv_publishes_them(personas):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for entry in FEED:
            z.writestr(f"{entry['id']}.json", json.dumps(entry))
    feed = services.feed_import(name="debian", data=archive.getvalue(), source="all.zip", user=personas.superuser)
    assert feed.advisory_count == len(FEED)


def test_only_portal_administrators_import_feeds(personas):
    with pytest.raises(ValidationError, match="administrators"):
        services.feed_import(name="x", data=feed_bytes([record("A-1", "CVE-1", "x", "1")]), source="x",
                             user=personas.admin)


def test_a_red_hat_csaf_vex_document_finds_the_rpm_packages_fixed_in_a_later_release(personas, promo):
    from builds.models import Build

    build = promo.builds[0]
    Build.objects.filter(pk=build.pk).update(package_format="rpm", packages={
        "openssl": "1:3.0.7-27.el9", "openssl-libs": "1:3.0.7-28.el9", "bash": "5.1.8-9.el9"})
    build.refresh_from_db()
    documents = [
        csaf_vex("CVE-2026-3001", fixed_purls=["pkg:rpm/redhat/openssl@3.0.7-28.el9?arch=x86_64&epoch=1",
                                                "pkg:rpm/redhat/openssl-libs@3.0.7-28.el9?arch=x86_64&epoch=1",
                                                "pkg:rpm/redhat/openssl@3.0.7-28.el9?arch=src&epoch=1"]),
        # Without the epoch, 3.0.8 would look newer than 1:3.0.7: the epoch wins, so this one does not apply.
        csaf_vex("CVE-2026-3002", fixed_purls=["pkg:rpm/redhat/openssl@3.0.8-1.el9?arch=x86_64"], severity="Low"),
        csaf_vex("CVE-2026-3003", fixed_purls=["pkg:rpm/redhat/bash@5.1.8-10.el9?arch=x86_64"], severity="Moderate"),
    ]
    feed = services.feed_import(name="rhel9-vex", data=json.dumps(documents).encode(), source="vex.json",
                                user=personas.superuser)
    assert feed.advisory_count == 3
    assert findings(build) == {("CVE-2026-3001", "openssl", "1:3.0.7-28.el9"),
                               ("CVE-2026-3003", "bash", "5.1.8-10.el9")}
    assert [f.advisory.severity for f in vulns.findings_for(build)] == ["high", "medium"]


def test_a_document_that_claims_csaf_but_is_not_is_refused(personas):
    with pytest.raises(ValidationError, match="not CSAF 2.0"):
        services.feed_import(name="x", data=json.dumps({"document": {"title": "hi"}}).encode(), source="x.json",
                             user=personas.superuser)


@pytest.mark.parametrize("data, reason", [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (json.dumps([{"id": "X-1", "aliases": 5}]).encode(), '"aliases" must be a list'),
    (json.dumps([{"id": "X-1", "affected": [{"package": {"name": "a", "ecosystem": "Debian"}, "ranges": 5}]}]).encode(),
     '"ranges" of a must be a list'),
    (json.dumps([{"id": "X-1", "affected": [{"package": {"name": "a", "ecosystem": "Debian"}, "versions": 5}]}]).encode(),
     '"versions" of a must be a list'),
    (json.dumps([{"id": "X-1\u0000", "affected": []}]).encode(), "NUL"),
    (json.dumps({"document": {"csaf_version": "2.0", "aggregate_severity": "high"}, "product_tree": []}).encode(),
     "not OSV or CSAF as the portal reads them"),
    (json.dumps({"document": {"csaf_version": "2.0"}, "vulnerabilities": [{"cve": "CVE-1", "product_status": ["x"]}]})
     .encode(), "not OSV or CSAF as the portal reads them"),
])
def test_a_feed_of_an_unexpected_shape_is_refused_with_the_reason_not_an_error(personas, data, reason):
    """What a feed server sends is not trusted: any shape the parser cannot read is a refusal that names it (a form
    error, or the feed's last error when read from a URL), never an exception that leaves the read unrecorded."""
    services.feed_import(name="debian-bookworm", data=feed_bytes(), source="osv.json", user=personas.superuser)
    with pytest.raises(ValidationError, match=reason):
        services.feed_import(name="debian-bookworm", data=data, source="bad.json", user=personas.superuser)
    feed = AdvisoryFeed.objects.get(name="debian-bookworm")
    assert feed.source == "osv.json" and feed.advisories.count() == len(FEED)


def test_a_zip_whose_entry_does_not_inflate_is_refused_with_the_reason(personas):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("all.json", json.dumps(FEED) * 3)
    data = bytearray(archive.getvalue())
    start = 30 + len("all.json")  # the local header, then the deflated bytes: spoil them
    data[start:start + 40] = b"\xff" * 40
    with pytest.raises(ValidationError, match="zip"):
        services.feed_import(name="debian", data=bytes(data), source="all.zip", user=personas.superuser)
    assert not AdvisoryFeed.objects.exists()
