from django.urls import path

from . import views, views_rotation

app_name = "supplychain"

urlpatterns = [
    path("teams/<slug:slug>/signing-keys/", views.keys, name="keys"),
    path("teams/<slug:slug>/signing-keys/generate/", views.key_generate, name="key_generate"),
    path("teams/<slug:slug>/signing-keys/import/", views.key_import, name="key_import"),
    path("signing-keys/<int:pk>/", views_rotation.key_detail, name="key_detail"),
    path("signing-keys/<int:pk>/rotate/", views_rotation.key_rotate, name="key_rotate"),
    path("key-rotations/<int:pk>/resume/", views_rotation.rotation_resume, name="rotation_resume"),
    path("signing-keys/<int:pk>/public.pem", views.key_public, name="key_public"),
    path("signing-keys/<int:pk>/retire/", views.key_retire, name="key_retire"),
    path("signing-keys/<int:pk>/sign-new-builds/", views.key_sign_new_builds, name="key_sign_new_builds"),
    path("stages/<int:pk>/signing-policy/", views.stage_policy, name="stage_policy"),
    path("stages/<int:pk>/host-trust/<str:name>", views.stage_host_trust, name="stage_host_trust"),
    path("stages/<int:pk>/vulnerability-policy/", views.stage_vulnerability_policy, name="stage_vulnerability_policy"),
    path("promotions/<int:pk>/vulnerability-override/", views.promotion_override, name="promotion_override"),
    path("builds/<int:pk>/supply-chain/", views.build_supply_chain, name="build"),
    path("builds/<int:pk>/supply-chain/card/", views.build_card, name="build_card"),
    path("builds/<int:pk>/sign/", views.build_sign, name="build_sign"),
    path("builds/<int:pk>/sbom.cdx.json", views.build_sbom, name="build_sbom"),
    path("promotions/<int:pk>/trust/", views.promotion_trust, name="promotion_trust"),
    path("lookaside/<path:path>", views.lookaside, name="lookaside"),
    path("advisories/", views.advisories, name="advisories"),
    path("advisories/import/", views.feed_import, name="feed_import"),
    path("advisories/feeds/source/", views.feed_source, name="feed_source"),
    path("advisories/feeds/<int:pk>/refresh/", views.feed_refresh, name="feed_refresh"),
    path("advisories/<str:identifier>/", views.advisory_detail, name="advisory_detail"),
]
