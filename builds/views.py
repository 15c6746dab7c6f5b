from django.contrib.auth.decorators import login_required
from django.shortcuts import render


@login_required
def definition_list(request):
    return render(request, "builds/definition_list.html", {})


@login_required
def build_list(request):
    return render(request, "builds/build_list.html", {})


@login_required
def promotion_list(request):
    return render(request, "builds/promotion_list.html", {})
