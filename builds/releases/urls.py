"""URLs of promotions, stages and approver groups."""

from django.urls import path

from . import fragments, views

app_name = "releases"

urlpatterns = [
    path("promotions/", views.promotion_list, name="promotion_list"),
    path("promotions/new/", views.promotion_create, name="promotion_create"),
    path("promotions/<int:pk>/", views.promotion_detail, name="promotion_detail"),
    path("promotions/<int:pk>/approve/", views.promotion_approve, name="promotion_approve"),
    path("promotions/<int:pk>/reject/", views.promotion_reject, name="promotion_reject"),
    path("promotions/<int:pk>/withdraw/", views.promotion_withdraw, name="promotion_withdraw"),
    path("promotions/<int:pk>/retry/", views.promotion_retry, name="promotion_retry"),
    path("promotions/<int:pk>/reopen/", views.promotion_reopen, name="promotion_reopen"),
    path("stages/", views.stage_board, name="stage_board"),
    path("stages/<int:pk>/", views.stage_detail, name="stage_detail"),
    path("stages/<int:pk>/policy/", views.stage_policy, name="stage_policy"),
    path("stages/<int:pk>/rollback/", views.stage_rollback, name="stage_rollback"),
    path("stages/<int:pk>/freeze/", views.stage_freeze, name="stage_freeze"),
    path("stages/<int:pk>/windows/", views.window_add, name="stage_window_add"),
    path("stages/freezes/<int:pk>/lift/", views.freeze_lift, name="stage_freeze_lift"),
    path("stages/windows/<int:pk>/delete/", views.window_delete, name="stage_window_delete"),
    # Fragments the builds pages load (portal.registry.fragment_url; builds/releases/fragments.py).
    path("stages/of/definitions/<int:pk>/", fragments.definition_stages, name="stages_of_definition"),
    path("stages/of/builds/<int:pk>/", fragments.build_stages, name="stages_of_build"),
    path("teams/<slug:slug>/approver-groups/", views.approver_groups, name="approver_groups"),
    path("approver-groups/<int:pk>/", views.approver_group_edit, name="approver_group_edit"),
    path("approver-groups/<int:pk>/delete/", views.approver_group_delete, name="approver_group_delete"),
]
