from django.contrib import admin
from django.urls import include, path, re_path

from . import api, api_views, sso, views, views_account, views_notifications

# The core's own pages, in the namespace "portal"; each feature app's urls.py names its own (builds, diskimages,
# releases, hosts).
core_patterns = [
    path("", views.dashboard, name="dashboard"),
    path("login/", views_account.LoginView.as_view(), name="login"),
    path("login/verify/", views_account.login_verify, name="login_verify"),
    path("login/sso/", sso.sign_in_start, name="sso_start"),
    path("login/sso/callback/", sso.sign_in_callback, name="sso_callback"),
    path("account/two-factor/", views_account.two_factor, name="two_factor"),
    path("account/two-factor/verify/", views_account.two_factor_verify, name="two_factor_verify"),
    path("account/two-factor/backup-codes/", views_account.two_factor_backup_codes, name="two_factor_backup_codes"),
    path("account/two-factor/remove/", views_account.two_factor_remove, name="two_factor_remove"),
    path("logout/", views_account.logout_view, name="logout"),
    path("password/", views_account.PasswordChangeView.as_view(success_url="/"), name="password_change"),
    path("switch-team/", views.switch_team, name="switch_team"),
    path("teams/", views.team_list, name="team_list"),
    path("teams/new/", views.team_create, name="team_create"),
    path("teams/<slug:slug>/", views.team_detail, name="team_detail"),
    path("teams/<slug:slug>/two-factor/", views_account.team_two_factor, name="team_two_factor"),
    path("teams/<slug:slug>/members/", views.member_add, name="member_add"),
    path("teams/<slug:slug>/members/<int:user_id>/role/", views.member_role, name="member_role"),
    path("teams/<slug:slug>/members/<int:user_id>/remove/", views.member_remove, name="member_remove"),
    path("teams/<slug:slug>/notifications/", views_notifications.notification_webhooks, name="notification_webhooks"),
    path("notifications/webhooks/<int:pk>/", views_notifications.notification_webhook_detail,
         name="notification_webhook_detail"),
    path("notifications/webhooks/<int:pk>/delete/", views_notifications.notification_webhook_delete,
         name="notification_webhook_delete"),
    path("notifications/webhooks/<int:pk>/test/", views_notifications.notification_webhook_test,
         name="notification_webhook_test"),
    path("notifications/deliveries/<int:pk>/redeliver/", views_notifications.webhook_delivery_redeliver,
         name="webhook_delivery_redeliver"),
    path("audit/", views.audit_list, name="audit_list"),
    path("audit/verify/", views.audit_verify, name="audit_verify"),
    path("explain/", views.explain_log, name="explain_log"),
    path("runs/<int:pk>/", views.run_detail, name="run_detail"),
    path("runs/<int:pk>/log/", views.run_log, name="run_log"),
    path("runs/<int:pk>/log/lines/", views.run_log_lines, name="run_log_lines"),
    path("runs/<int:pk>/log/line/<int:seq>/", views.run_log_line, name="run_log_line"),
    path("runs/<int:pk>/log/search/", views.run_log_search, name="run_log_search"),
    path("runs/<int:pk>/log.txt", views.run_log_raw, name="run_log_raw"),
    path("runs/<int:pk>/cancel/", views.run_cancel, name="run_cancel"),
    path("runs/<int:pk>/retry/", views.run_retry, name="run_retry"),
    path("api/v1/docs/", views.api_docs, name="api_docs"),
    path("account/api-tokens/", views_account.api_tokens, name="api_tokens"),
    path("account/api-tokens/<int:pk>/revoke/", views_account.api_token_revoke, name="api_token_revoke"),
    path("teams/<slug:slug>/api-tokens/", views_account.team_api_tokens, name="team_api_tokens"),
    path("health/", views.health, name="health"),
    path("health/live", views.health_live, name="health_live"),  # answered by portal.middleware.health_probes
    path("health/ready", views.health_ready, name="health_ready"),
    path("metrics", views.metrics, name="metrics"),  # answered by portal.middleware.health_probes
]

urlpatterns = [
    path("", include((core_patterns, "portal"))),
    path("", include("builds.urls")),
    path("", include("builds.diskimages.urls")),
    path("", include("builds.releases.urls")),
    path("", include("builds.supplychain.urls")),
    path("", include("hosts.urls")),
    path("", include("hosts.rollouts.urls")),
    path("api/v1/", api.mount(api_views.routers())),
    re_path(r"^api/v1/", api.not_found),  # any other path under it (after every API route): the API's own 404
    path("admin/", admin.site.urls),
]

handler400 = "portal.views.error_400"
handler403 = "portal.views.error_403"
handler404 = "portal.views.error_404"
handler500 = "portal.views.error_500"
