from django.urls import path

from . import views

urlpatterns = [
    path("hosts/", views.host_list, name="host_list"),
]
