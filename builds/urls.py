from django.urls import path

from . import views

urlpatterns = [
    path("images/", views.definition_list, name="definition_list"),
    path("builds/", views.build_list, name="build_list"),
    path("promotions/", views.promotion_list, name="promotion_list"),
]
