"""URLs of disk images, their files, configurations, a team's disk image settings and kickstarts."""

from django.urls import path

from . import views_diskimages as views

urlpatterns = [
    path("disk-images/", views.diskimage_list, name="diskimage_list"),
    path("disk-images/new/", views.diskimage_create, name="diskimage_create"),
    path("disk-images/<int:pk>/", views.diskimage_detail, name="diskimage_detail"),
    path("disk-images/<int:pk>/cancel/", views.diskimage_cancel, name="diskimage_cancel"),
    path("disk-images/<int:pk>/retry/", views.diskimage_retry, name="diskimage_retry"),
    path("disk-images/<int:pk>/delete-files/", views.diskimage_delete_files, name="diskimage_delete_files"),
    path("disk-images/<int:pk>/config.toml", views.diskimage_config, name="diskimage_config"),
    path("disk-images/files/<str:key>/", views.artifact_download, name="artifact_download"),
    path("disk-images/files/<str:key>/sha256/", views.artifact_checksum, name="artifact_checksum"),
    path("disk-images/files/<str:key>/delete/", views.artifact_delete, name="artifact_delete"),
    path("disk-images/configurations/", views.preset_list, name="diskimage_preset_list"),
    path("disk-images/configurations/new/", views.preset_create, name="diskimage_preset_create"),
    path("disk-images/configurations/import/", views.preset_import, name="diskimage_preset_import"),
    path("disk-images/configurations/<int:pk>/", views.preset_edit, name="diskimage_preset_edit"),
    path("disk-images/configurations/<int:pk>/export/", views.preset_export, name="diskimage_preset_export"),
    path("disk-images/configurations/<int:pk>/delete/", views.preset_delete, name="diskimage_preset_delete"),
    path("teams/<slug:slug>/disk-images/", views.diskimage_settings, name="diskimage_settings"),
    path("disk-images/credentials/<int:pk>/delete/", views.cloud_credential_delete, name="cloud_credential_delete"),
    path("kickstarts/new/", views.kickstart_create, name="kickstart_create"),
]
