"""The peers benchmark's arithmetic: medians, ratios against the in-process ceiling and the best
peer, the goals, the floors."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from systems import NOT_COMPARED, PEER_FAMILIES, SHORT, SYSTEMS, Config


def summarize(configs: dict[str, Config], samples: dict[str, list[float]]) -> dict[str, Any]:
    median = {name: statistics.median(values) for name, values in samples.items()}
    ceiling = {enc: median[f"inprocess_1_{enc}"] for enc in ("raw", "png")}

    def best(systems: Sequence[str], sessions: int, encoding: str) -> tuple[str, float]:
        """The fastest of ``systems`` in a group ("", nan when none was measured)."""
        found = [
            (median[c.name], c.name)
            for c in configs.values()
            if c.system in systems and c.sessions == sessions and c.encoding == encoding
        ]
        rate, name = max(found) if found else (math.nan, "")
        return name, rate

    rows = []
    groups = sorted(
        {(c.sessions, c.encoding) for c in configs.values() if c.system not in NOT_COMPARED},
        key=lambda g: (g[0], g[1] != "raw"),
    )
    for sessions, encoding in groups:
        peers_best = {family: best(systems, sessions, encoding) for family, systems in PEER_FAMILIES.items()}
        members = [c for c in configs.values() if c.system == "inprocess" and c.encoding == encoding]
        members += [c for c in configs.values() if c.sessions == sessions and c.encoding == encoding]
        members = list(dict.fromkeys(members))
        for c in members:
            rate = median[c.name]
            rows.append(
                {
                    "group": f"{sessions} session{'s' if sessions > 1 else ''}, {encoding}",
                    "sessions": sessions,
                    "encoding": encoding,
                    "config": c.name,
                    "system": SYSTEMS[c.system],
                    "how": c.how,
                    "label": SHORT[(c.system, c.mode)],
                    "steps_per_second": rate,
                    "min": min(samples[c.name]),
                    "max": max(samples[c.name]),
                    "x_in_process_raw": rate / ceiling["raw"],
                    "x_in_process_same_encoding": rate / ceiling[encoding],
                    **{f"x_best_{family}": rate / peer[1] for family, peer in peers_best.items()},
                }
            )
    goals = goal_checks(configs, median, ceiling, best)
    bounds = [
        {
            "config": c.name,
            "encoding": c.encoding,
            "how": c.how,
            "steps_per_second": median[c.name],
            "x_in_process": median[c.name] / ceiling[c.encoding],
            "visact_step_x_floor": median.get(f"visact_1_{c.encoding}", math.nan) / median[c.name],
        }
        for c in configs.values()
        if c.system == "floor"
    ]
    return {"medians": median, "rows": rows, "goals": goals, "bounds": bounds}


def goal_checks(configs: dict[str, Config], median: dict[str, float], ceiling: dict[str, float], best: Any):
    goals: list[dict[str, Any]] = []
    groups = sorted({(c.sessions, c.encoding) for c in configs.values() if c.system not in NOT_COMPARED})
    for sessions, encoding in groups:
        ours_name, ours = best(("visact",), sessions, encoding)
        if not ours_name:
            continue
        for family, systems in PEER_FAMILIES.items():
            peer_name, peer = best(systems, sessions, encoding)
            if not peer_name:
                continue
            goals.append(
                {
                    "goal": "ahead of both peers in every configuration",
                    "where": f"{sessions} session(s), {encoding}: best visact vs best {family}",
                    "ours": ours_name,
                    "theirs": peer_name,
                    "ratio": ours / peer,
                    "target": 1.0,
                    "holds": ours > peer,
                }
            )
    for encoding in ("raw", "png"):
        ours_name, ours = best(("visact",), 1, encoding)
        if not ours_name:
            continue
        ratio = ours / ceiling[encoding]
        goals.append(
            {
                "goal": "one session at >= 0.8x in-process",
                "where": f"1 session, {encoding}: best visact vs in-process ({encoding})",
                "ours": ours_name,
                "theirs": f"inprocess_1_{encoding}",
                "ratio": ratio,
                "target": 0.8,
                "holds": ratio >= 0.8,
            }
        )
    many = max(c.sessions for c in configs.values())
    for encoding in ("raw", "png"):
        batched = [
            n
            for n in (f"visact_{many}_{encoding}_batch", f"visact_{many}_{encoding}_batch_stream")
            if n in median
        ]
        if not batched:
            continue
        ours_name = max(batched, key=lambda n: median[n])
        peer_name, peer = best(("dm_env_rpc", "openenv", "openenv_nodeflate"), many, encoding)
        if not peer_name:
            continue
        ratio = median[ours_name] / peer
        goals.append(
            {
                "goal": f"{many} sessions with batched step >= 2x the best peer",
                "where": f"{many} sessions, {encoding}: best visact batch vs best peer",
                "ours": ours_name,
                "theirs": peer_name,
                "ratio": ratio,
                "target": 2.0,
                "holds": ratio >= 2.0,
            }
        )
    return goals
