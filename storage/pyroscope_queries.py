"""Profiles per target group for the Pyroscope push (daemon/pyroscope.py).

A group is every target sharing a role and a set of GPUs: those are the labels a push
carries (PIDs are not labels: they are unbounded), so targets that would get the same
labels are merged into one profile rather than sent as competing series.
"""
from __future__ import annotations

from dataclasses import dataclass

from infersight.storage.stacks import Profile, ProfileFilter, profile


@dataclass
class GroupProfile:
    role: str
    gpus: tuple[int, ...]
    profile: Profile


def group_profiles(cur, t_from: float, t_to: float, *, active: bool = True) -> list[GroupProfile]:
    """Per (role, GPUs) with samples in [t_from, t_to): the merged profile of its targets
    (active samples only unless ``active`` is False), ordered by role then GPUs."""
    params: list = [int(t_from // 1), int(-(-t_to // 1))]
    extra = ""
    if active:
        extra = " AND s.active"
    rows = cur.execute(f"""SELECT DISTINCT s.target, g.role, g.gpus
                          FROM stack_samples s JOIN targets g ON g.id = s.target
                          WHERE s.bucket >= ? AND s.bucket < ?{extra}""", params).fetchall()
    groups: dict[tuple[str, tuple[int, ...]], list[int]] = {}
    for target, role, gpus in rows:
        key = (role or "unknown", tuple(sorted(int(g) for g in (gpus or ()))))
        groups.setdefault(key, []).append(int(target))
    out = []
    for (role, gpus), ids in sorted(groups.items()):
        flt = ProfileFilter(target_ids=tuple(sorted(ids)), active=True if active else None)
        out.append(GroupProfile(role, gpus, profile(cur, t_from, t_to, flt)))
    return out
