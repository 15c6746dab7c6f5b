from django.apps import AppConfig
from django.db.models.signals import post_migrate


class HostsConfig(AppConfig):
    name = "hosts"
    verbose_name = "Hosts"

    def ready(self):
        # After migrate and after a flush (tests), count the tallies again from the hosts: a flush deletes hosts row by
        # row on SQLite, which the tally triggers record, and nothing else may leave them off.
        post_migrate.connect(_recount_tallies, sender=self)


def _recount_tallies(sender, using="default", **kwargs):
    from django.db import connections

    from . import services

    if "hosts_hosttally" in connections[using].introspection.table_names():
        services.tallies_recount(using=using)
