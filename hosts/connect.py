"""Reaching a host: its SSH target (pinned host key, the team's key, its jump host) and where commands run on it
(its kept-open connection, or a fresh one). The poller, actions and rollouts all connect through here."""

from functools import lru_cache

from django.conf import settings

from portal import ssh

from .models import TeamSSHKey


def setting(name, default):
    return getattr(settings, name, default)


NAME_MAX = 200


class HostError(Exception):
    """A request about a host that cannot be done, with a message for the person who asked."""


class ActionInProgress(HostError):
    pass


@lru_cache(maxsize=256)
def _pkey(team_id, fingerprint, private_text):
    return ssh.load_private_key(private_text)


def private_key_for(team_key):
    return _pkey(team_key.team_id, team_key.fingerprint, team_key.private_key)


# --- Connecting ------------------------------------------------------------------------------------------------------


def _jump_target(host, team_key=None):
    jump = host.jump_host
    if jump is None:
        return None
    team_key = team_key or TeamSSHKey.objects.filter(team_id=host.team_id).first()
    return ssh.Target(address=jump.address, port=jump.port, username=jump.ssh_user, host_key=jump.host_key or None,
                      private_key=private_key_for(team_key) if team_key else None, name=f"jump host {jump.name}",
                      private_key_text=team_key.private_key if team_key else "")


def target_for(host, team_key=None):
    """The ssh.Target for a host (its pinned key, the team's private key, its jump host)."""
    team_key = team_key or TeamSSHKey.objects.filter(team_id=host.team_id).first()
    if team_key is None:
        raise HostError(f"{host.team} has no SSH key yet: open the team's host keys page to generate one.")
    return ssh.Target(
        address=host.address, port=host.port, username=host.ssh_user, host_key=host.host_key or None,
        private_key=private_key_for(team_key), jump=_jump_target(host, team_key), name=host.name,
        private_key_text=team_key.private_key,
        connect_timeout=setting("HOSTS_CONNECT_TIMEOUT", ssh.CONNECT_TIMEOUT),
        handshake_timeout=setting("HOSTS_HANDSHAKE_TIMEOUT", ssh.HANDSHAKE_TIMEOUT),
        auth_timeout=setting("HOSTS_AUTH_TIMEOUT", ssh.AUTH_TIMEOUT),
    )


def keep_open():
    """Whether commands go over kept-open connections (portal.sshpool) or a fresh connection each (portal.ssh)."""
    return setting("HOSTS_SSH_KEEP_OPEN", True)


def session_for(target):
    """Where to run commands on a host: its kept-open connection, or a fresh one. A context manager with `run()`."""
    if not keep_open():
        return ssh.Connection(target)
    # portal.sshpool loads asyncssh (a quarter of a second): only the processes that talk to hosts pay for it.
    from portal import sshpool

    return sshpool.Session(target)
