from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import User

from .validator import directory


class DirectoryBackend(ModelBackend):
    """Users and passwords from the users file, as it is now (a test adds people while the provider runs)."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        entry = directory().get(username or "")
        if entry is None or password != entry["password"]:
            return None
        user, _ = User.objects.get_or_create(username=username)
        return user
