"""URLs of disk images, their files, configurations, a team's disk image settings and kickstarts."""

from django.urls import path, re_path

from . import views, views_boottests, views_presets

app_name = "diskimages"

urlpatterns = [
    path("disk-images/", views.diskimage_list, name="list"),
    path("disk-images/new/", views.diskimage_create, name="create"),
    path("disk-images/<int:pk>/", views.diskimage_detail, name="detail"),
    path("disk-images/<int:pk>/delete-files/", views.diskimage_delete_files, name="delete_files"),
    path("disk-images/<int:pk>/config.toml", views.diskimage_config, name="config"),
    re_path(r"^disk-images/digests/(?P<digest>sha256:[0-9a-f]{64})/$", views.digest_images, name="digest_images"),
    path("disk-images/files/<str:key>/", views.artifact_download, name="artifact_download"),
    path("disk-images/files/<str:key>/sha256/", views.artifact_checksum, name="artifact_checksum"),
    path("disk-images/files/<str:key>/delete/", views.artifact_delete, name="artifact_delete"),
    path("disk-images/configurations/", views_presets.preset_list, name="preset_list"),
    path("disk-images/configurations/new/", views_presets.preset_create, name="preset_create"),
    path("disk-images/configurations/import/", views_presets.preset_import, name="preset_import"),
    path("disk-images/configurations/<int:pk>/", views_presets.preset_edit, name="preset_edit"),
    path("disk-images/configurations/<int:pk>/export/", views_presets.preset_export, name="preset_export"),
    path("disk-images/configurations/<int:pk>/delete/", views_presets.preset_delete, name="preset_delete"),
    path("teams/<slug:slug>/disk-images/", views.diskimage_settings, name="settings"),
    path("disk-images/credentials/<int:pk>/delete/", views.cloud_credential_delete, name="cloud_credential_delete"),
    path("kickstarts/new/", views.kickstart_create, name="kickstart_create"),
    path("boot-tests/", views_boottests.boot_test_list, name="boot_test_list"),
    path("boot-tests/new/", views_boottests.boot_test_create, name="boot_test_create"),
    path("boot-tests/<int:pk>/", views_boottests.boot_test_detail, name="boot_test_detail"),
    path("boot-tests/definitions/<int:definition_pk>/plan/", views_boottests.boot_test_plan, name="boot_test_plan"),
]
