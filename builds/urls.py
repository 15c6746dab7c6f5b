from django.urls import path

from . import api_legacy, views, views_integrations

app_name = "builds"

urlpatterns = [
    path("images/", views.definition_list, name="definition_list"),
    path("images/new/", views.definition_create, name="definition_create"),
    path("images/<int:pk>/", views.definition_detail, name="definition_detail"),
    path("images/<int:pk>/edit/", views.definition_edit, name="definition_edit"),
    path("images/<int:pk>/delete/", views.definition_delete, name="definition_delete"),
    path("images/<int:pk>/build/", views.definition_build, name="definition_build"),
    path("images/<int:pk>/revisions/new/", views.revision_create, name="revision_create"),
    path("images/<int:pk>/revisions/check/", views.revision_check, name="revision_check"),
    path("images/<int:pk>/revisions/<int:number>/", views.revision_detail, name="revision_detail"),
    path("images/<int:pk>/revisions/<int:number>/build/", views.revision_build, name="revision_build"),
    path("images/<int:pk>/diff/", views.revision_diff, name="revision_diff"),
    # A build's page and comparisons name builds by their number, as people do ("build 3" of an image).
    path("images/<int:pk>/builds/<int:number>/", views.build_page, name="build_page"),
    path("images/<int:pk>/builds/compare/", views.definition_compare, name="definition_compare"),
    path("images/<int:pk>/retention/", views.definition_retention, name="definition_retention"),
    path("images/<int:pk>/retention/policy/", views.definition_retention_policy, name="definition_retention_policy"),
    path("images/<int:pk>/retention/apply/", views.definition_retention_apply, name="definition_retention_apply"),
    path("builds/<int:pk>/pin/", views.build_pin, name="build_pin"),
    path("builds/", views.build_list, name="build_list"),
    # By id: where links pointed before; pages redirect to the numbered URLs.
    path("builds/compare/", views.build_compare, name="build_compare"),
    path("builds/<int:pk>/", views.build_detail, name="build_detail"),
    path("builders/", views.builder_list, name="builder_list"),
    path("builders/new/", views.builder_edit, name="builder_create"),
    path("builders/<int:pk>/edit/", views.builder_edit, name="builder_edit"),
    path("builders/<int:pk>/check/", views.builder_check, name="builder_check"),
    path("builders/<int:pk>/toggle/", views.builder_toggle, name="builder_toggle"),
    path("builders/<int:pk>/prune/", views.builder_prune, name="builder_prune"),
    path("teams/<slug:slug>/integrations/", views_integrations.integrations, name="integrations"),
    path("teams/<slug:slug>/integrations/credentials/", views_integrations.credential_create, name="credential_create"),
    path("integrations/credentials/<int:pk>/delete/", views_integrations.credential_delete, name="credential_delete"),
    path("teams/<slug:slug>/integrations/git-logins/", views_integrations.git_credential_create, name="git_credential_create"),
    path("integrations/git-logins/<int:pk>/delete/", views_integrations.git_credential_delete, name="git_credential_delete"),
    path("teams/<slug:slug>/integrations/tokens/", views_integrations.token_create, name="token_create"),
    path("integrations/tokens/<int:pk>/revoke/", views_integrations.token_revoke, name="token_revoke"),
    path("teams/<slug:slug>/integrations/webhooks/", views_integrations.webhook_create, name="webhook_create"),
    path("integrations/webhooks/<int:pk>/delete/", views_integrations.webhook_delete, name="webhook_delete"),
    path("api/v1/builds/", api_legacy.build_create, name="api_build_create"),
    path("api/v1/builds/<int:pk>/", api_legacy.build_detail, name="api_build_detail"),
    path("api/v1/definitions/", api_legacy.definition_list, name="api_definition_list"),
    path("hooks/git/<str:key>/", api_legacy.git_webhook, name="git_webhook"),
]
