"""What a host reports, or a team admin typed, is text on every page that lists hosts: never markup. The host list
writes its rows in Python for speed (hosts_tags.host_cells), so it is checked here with hostile values in every field
it shows."""

from django.utils import timezone

from hosts.models import Host, HostState

HOSTILE = '<script>alert("x")</script>'


def test_the_host_list_shows_hostile_values_as_text(personas, client_for):
    stage = personas.team.stages.get(name="prod")
    Host.objects.create(
        team=personas.team, name="h<b>1</b>", address='10.0.0.1"><img src=x onerror=alert(1)>', port=2222,
        labels=f"web {HOSTILE}", stage=stage, tracked_image=f"registry.example.com/x:{HOSTILE}",
        state=HostState.UNREACHABLE, last_error=f"ssh: {HOSTILE}", is_bootc=True,
        booted_digest="sha256:" + "1" * 64, booted_version=HOSTILE, staged_digest="sha256:" + "2" * 64,
        staged_version=HOSTILE, status_at=timezone.now(), host_key="ssh-ed25519 AAAA")
    page = client_for(personas.viewer).get("/hosts/").content.decode()
    assert "<script>alert" not in page and "<img src=x" not in page and "<b>1</b>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "h&lt;b&gt;1&lt;/b&gt;" in page and "&lt;img src=x onerror=alert(1)&gt;" in page
