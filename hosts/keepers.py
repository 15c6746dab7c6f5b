"""Which digests hosts need kept in the registry (registered in `portal.registry.digest_keeper`, asked by builds'
image retention, which may not import hosts): every digest a host boots, has staged, or keeps as its rollback
deployment in its latest status, so `bootc rollback` and a redeploy never meet "image not found". Hosts of other teams
count too (a digest is the same image wherever it came from), but only the definition's team's hosts are named."""

from __future__ import annotations

from collections import defaultdict

from django.db.models import Q

from .models import Host

SLOTS = (("booted_digest", "boots it"), ("staged_digest", "has it staged"), ("rollback_digest", "keeps it as rollback"))
NAMED = 3  # hosts named per digest and slot; the rest are counted


def digests_in_use(*, definition, digests) -> dict[str, list[str]]:
    digests = list(digests)
    rows = (Host.objects.filter(Q(booted_digest__in=digests) | Q(staged_digest__in=digests)
                                | Q(rollback_digest__in=digests))
            .values_list("name", "team_id", *[slot for slot, _ in SLOTS]).order_by("name"))
    own = defaultdict(list)
    others = defaultdict(int)
    wanted = set(digests)
    for name, team_id, *slot_digests in rows:
        for (_slot, words), digest in zip(SLOTS, slot_digests, strict=True):
            if digest in wanted:
                if team_id == definition.team_id:
                    own[(digest, words)].append(name)
                else:
                    others[(digest, words)] += 1
    found: dict[str, list[str]] = defaultdict(list)
    for (digest, words), names in own.items():
        shown = ", ".join(names[:NAMED]) + (f" and {len(names) - NAMED} more" if len(names) > NAMED else "")
        found[digest].append(f"host{'s' if len(names) > 1 else ''} {shown} {_verb(words, len(names))}")
    for (digest, words), count in others.items():
        found[digest].append(f"{count} host(s) of other teams {_verb(words, count)}")
    return dict(found)


def _verb(words, count):
    if count == 1:
        return words
    return words.replace("boots", "boot").replace("has", "have").replace("keeps", "keep")
