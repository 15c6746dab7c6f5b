"""Every state change of images, builds, stages and promotions, written once."""

from .models import DEFAULT_STAGES, Stage


def stages_ensure_default(*, team):
    """Give a team the stages dev, test and prod (approvals: none, one, two) unless it has stages already."""
    if team.stages.exists():
        return list(team.stages.all())
    return [
        Stage.objects.create(team=team, name=name, position=position, required_approvals=position)
        for name, position in DEFAULT_STAGES
    ]
