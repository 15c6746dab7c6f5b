"""Host tasks, on the `hosts` queue. Thin: ids in, services do the work."""

from celery import shared_task
from django.conf import settings

from . import actions, drift, fleet, poller, reportin, runtime, services
from .models import Host


@shared_task
def poll_due_hosts():
    """Beat: claim the hosts whose poll is due and hand them to poll tasks in slices, so several workers share a big
    fleet; each slice is polled concurrently by a thread pool."""
    ids = poller.claim_due_hosts()
    size = getattr(settings, "HOSTS_POLL_BATCH", 500)
    for i in range(0, len(ids), size):
        poll_hosts_task.delay(ids[i:i + size])
    return len(ids)


@shared_task
def poll_hosts_task(host_ids):
    return poller.poll_hosts(host_ids)


@shared_task
def runtime_read_due():
    """Beat: read what changed on the hosts whose last reading is older than RUNTIME_READ_HOURS, a slice at a time."""
    ids = list(runtime.hosts_due()[:getattr(settings, "RUNTIME_READ_BATCH", 200)])
    for host_id in ids:
        runtime_read_task.delay(host_id)
    return len(ids)


@shared_task
def runtime_read_task(host_id):
    host = Host.objects.filter(pk=host_id).first()
    return runtime.runtime_read(host).etc_total if host is not None else None


@shared_task
def fleet_tallies_refresh(team_ids, page_number):
    """Sum the fleet view's tallies again once its cached answer is a minute old, so no reader waits for it."""
    fleet.refresh(team_ids, page_number)


@shared_task
def agent_seen_flush():
    """Beat: write the last-seen marks of hosts that reported an unchanged status (the reports themselves flush once a
    second while they arrive; this covers the last ones before a quiet spell)."""
    return reportin.flush_last_seen()


@shared_task
def agent_offline_sweep():
    """Beat: hosts that report in and stopped reporting go offline (one event per flapping spell)."""
    return reportin.agents_offline_sweep()


@shared_task
def refresh_reference_digests():
    """Beat: resolve the references hosts track, so drift is measured against what the tags hold now."""
    return {ref: (v if isinstance(v, str) else len(v)) for ref, v in drift.refresh_reference_digests().items()}


@shared_task
def fetch_host_keys_task(host_ids):
    return services.fetch_keys(host_ids)


@shared_task(acks_late=True)
def host_action_task(action_id):
    return actions.host_action_execute(action_id).pk


@shared_task
def tallies_compact():
    """Beat: fold the host tallies' +1/-1 rows."""
    return services.tallies_compact()


@shared_task
def check_updates_due():
    """Beat (every HOSTS_UPDATE_CHECK_SECONDS): `bootc upgrade --check` on every trusted bootc host, in slices, so the
    fleet says which hosts have an update available without downloading anything."""
    ids = list(Host.objects.filter(is_bootc=True).exclude(host_key="").values_list("pk", flat=True))
    size = getattr(settings, "HOSTS_POLL_BATCH", 500)
    for i in range(0, len(ids), size):
        check_updates_task.delay(ids[i:i + size])
    return len(ids)


@shared_task
def check_updates_task(host_ids):
    return poller.check_updates(host_ids)
