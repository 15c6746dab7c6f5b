"""Logging filters named in settings.LOGGING."""

import logging


class RefusalsInOneLine(logging.Filter):
    """django.request logs a refused request (403, 404, any 4xx) with the exception that refused it, so every
    PermissionDenied or Http404 printed its traceback. The line already says what was refused and where; the traceback
    is kept for 5xx, where it is the clue."""

    def filter(self, record):
        if getattr(record, "status_code", 500) < 500:
            record.exc_info = None
            record.exc_text = None
        return True
