import logging

from celery import shared_task

from . import web_os

log = logging.getLogger(__name__)


@shared_task
def demo_advance(attempt=0):
    """`make run`'s demo (portal.demo.web_os): one step towards it (the builds and promotions, then the 9 → 10
    rollout), then again in 2 s until it is done (10 minutes at most)."""
    done, note = web_os.advance()
    if done and note == web_os.READY:
        done, note = web_os.nine_to_ten()
    log.info("demo: %s", note)
    if not done and attempt < 300:
        demo_advance.apply_async(kwargs={"attempt": attempt + 1}, countdown=2)
