"""The core. Its Celery app (portal/celery.py) is made when Django starts (PortalConfig.ready) or when a worker loads
`celery -A portal`, not by `import portal`: the command line client (portal/cli/) lives in this package and starts
without loading Django, Celery or the storage libraries."""

__all__ = ["celery_app"]


def __getattr__(name):
    if name == "celery_app":
        from .celery import app  # lazily: a cycle at start-up (portal.celery loads Django settings, which import portal)

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
