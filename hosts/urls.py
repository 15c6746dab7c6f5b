from django.urls import path, re_path

from . import agent_api, fragments, views, views_enrollment, views_inventory, views_runtime

app_name = "hosts"

urlpatterns = [
    path("hosts/", views.host_list, name="host_list"),
    path("hosts/new/", views_inventory.host_add, name="host_add"),
    path("hosts/import/", views_inventory.host_import, name="host_import"),
    path("hosts/drift/", views.drift_list, name="host_drift"),
    path("hosts/fleet/", views.fleet, name="host_fleet"),
    path("hosts/fleet/runtime/", views_runtime.fleet_runtime, name="fleet_runtime"),
    re_path(r"^hosts/digests/(?P<digest>sha256:[0-9a-f]{64})/$", views.digest_hosts, name="host_digest"),
    path("hosts/<int:pk>/", views.host_detail, name="host_detail"),
    path("hosts/<int:pk>/raw/", views.host_raw, name="host_raw"),
    path("hosts/<int:pk>/snapshots/<int:snapshot>/output/", views.host_snapshot_output, name="host_snapshot_output"),
    path("hosts/<int:pk>/edit/", views_inventory.host_edit, name="host_edit"),
    path("hosts/<int:pk>/delete/", views_inventory.host_delete, name="host_delete"),
    path("hosts/<int:pk>/trust/", views_inventory.host_trust, name="host_trust"),
    path("hosts/<int:pk>/poll/", views.host_poll, name="host_poll"),
    path("hosts/<int:pk>/runtime/read/", views_runtime.host_runtime_read, name="host_runtime_read"),
    path("hosts/<int:pk>/runtime/files/", views_runtime.host_runtime_files, name="host_runtime_files"),
    path("hosts/<int:pk>/runtime/propose/", views_runtime.host_runtime_propose, name="host_runtime_propose"),
    path("hosts/stages/<int:pk>/runtime-policy/", views_runtime.stage_runtime_policy, name="stage_runtime_policy"),
    path("hosts/<int:pk>/approve/", views_enrollment.host_approve, name="host_approve"),
    path("hosts/<int:pk>/actions/<slug:kind>/", views.host_action, name="host_action"),
    # Fragments the builds and release pages load (portal.registry.fragment_url; hosts/fragments.py).
    path("hosts/of/definitions/<int:pk>/", fragments.definition_hosts, name="hosts_of_definition"),
    path("hosts/of/definitions/<int:pk>/following/", fragments.definition_following, name="hosts_following_definition"),
    path("hosts/of/builds/<int:pk>/", fragments.build_hosts, name="hosts_of_build"),
    path("hosts/of/promotions/<int:pk>/", fragments.promotion_hosts, name="hosts_of_promotion"),
    path("hosts/of/stages/<int:pk>/", fragments.stage_hosts, name="hosts_of_stage"),
    # The agent of a host that reports in (its own credential; no session).
    path("agent/v1/enroll", agent_api.enroll, name="agent_enroll"),
    path("agent/v1/status", agent_api.status, name="agent_status"),
    path("agent/v1/runtime", agent_api.runtime, name="agent_runtime"),
    path("agent/v1/actions/next", agent_api.action_next, name="agent_action_next"),
    path("agent/v1/actions/<int:pk>/log", agent_api.action_log, name="agent_action_log"),
    path("agent/v1/actions/<int:pk>/finish", agent_api.action_finish, name="agent_action_finish"),
    path("teams/<slug:slug>/enrollment/", views_enrollment.enrollment, name="enrollment"),
    path("teams/<slug:slug>/enrollment/<int:pk>/revoke/", views_enrollment.enrollment_token_revoke,
         name="enrollment_token_revoke"),
    path("hosts/release-map/", fragments.release_map, name="release_map"),
    path("hosts/release-map/definitions/<int:pk>/", fragments.definition_release_map, name="release_map_of_definition"),
    path("teams/<slug:slug>/ssh-key/", views_inventory.team_keys, name="team_keys"),
    path("teams/<slug:slug>/ssh-key/create/", views_inventory.team_key_create, name="team_key_create"),
    path("teams/<slug:slug>/jump-hosts/", views_inventory.jump_host_add, name="jump_host_add"),
    path("teams/<slug:slug>/pending-keys/", views_inventory.pending_keys_confirm, name="pending_keys_confirm"),
]
