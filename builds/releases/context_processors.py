from django.utils.functional import SimpleLazyObject

from .models import Promotion


def inbox(request):
    """`nav_inbox_count`: promotions waiting for the user's decision, for the navigation's badge. One COUNT query, run
    only if the page renders the badge."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"nav_inbox_count": SimpleLazyObject(lambda: Promotion.objects.waiting_for(user).count())}
