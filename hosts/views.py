from django.contrib.auth.decorators import login_required
from django.shortcuts import render


@login_required
def host_list(request):
    return render(request, "hosts/host_list.html", {})
