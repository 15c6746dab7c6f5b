from django.urls import path

from . import views

app_name = "rollouts"

urlpatterns = [
    path("rollouts/", views.rollout_list, name="list"),
    path("rollouts/<int:pk>/", views.rollout_detail, name="detail"),
    path("rollouts/<int:pk>/pause/", views.rollout_pause, name="pause"),
    path("rollouts/<int:pk>/resume/", views.rollout_resume, name="resume"),
    path("rollouts/<int:pk>/abort/", views.rollout_abort, name="abort"),
    path("rollouts/policies/<int:pk>/", views.stage_policy, name="policy"),
    path("rollouts/policies/<int:pk>/start/", views.rollout_start, name="start"),
    path("rollouts/of/promotions/<int:pk>/", views.promotion_rollout, name="of_promotion"),
    path("rollouts/of/hosts/<int:pk>/", views.host_rollouts, name="of_host"),
    path("rollouts/of/fleet/", views.fleet_rollouts, name="of_fleet"),
]
