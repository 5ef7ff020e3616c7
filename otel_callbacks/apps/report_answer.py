"""A run's answer first, in words and numbers: how long, how it ended, where the time went, what bound
it, what was slow or failed, what Ultralytics retried, what the instrumentation itself cost."""

from __future__ import annotations

from collections import Counter

from .. import semconv as sc
from .report import RunView, own_times
from .report_tables import duration

_ENDINGS = {  # the root's status message -> how people say it
    "interrupted (KeyboardInterrupt)": "interrupted (Ctrl-C)",
    "terminated by SIGTERM": "terminated (SIGTERM)",
    sc.UNCLOSED: "killed: the process ended without closing it (SIGKILL, out of memory, power)",
}


def outcome(run: RunView) -> str:
    root = run.spans[0]
    if not root.status:
        stop = next((e for e in root.events if e["name"] == sc.EVENT_EARLY_STOP), None)
        return f"finished, stopped early: {stop.get(sc.ATTR_MESSAGE, '')}" if stop else "finished"
    message = root.status.removeprefix("ERROR: ")
    return _ENDINGS.get(message, f"failed: {message}")


def answer(run: RunView) -> list[str]:
    """The lines that open the run's section, most important first."""
    lines = [f"{duration(run.duration_ms / 1e3)}, {outcome(run)}"]
    own = own_times(run.spans, 0)
    if run.name in own:  # the root's time that none of its phases covers
        own[f"{run.name} outside its phases"] = own.pop(run.name)
    total = sum(own.values()) or 1.0
    top = ", ".join(f"{name} {100 * ms / total:.0f}%" for name, ms in own.most_common(3))
    lines.append(f"where the time went: {top}")
    lines += verdicts(run)
    restarts = [e for e in run.spans[0].events if e["name"] == sc.EVENT_EPOCH_RESTART]
    if restarts:
        lines.append(
            f"retried {len(restarts)} epoch(s): " + "; ".join(e.get(sc.ATTR_MESSAGE, "") for e in restarts)
        )
    slow = Counter(s.name for s in run.spans if s.slow)
    failed = Counter(s.name for s in run.spans if s.status and not s.is_phase)
    for what, found in (("slow", slow), ("failed", failed)):
        if found:
            lines.append(
                f"{what}: " + ", ".join(f"{name} ({count}x)" for name, count in found.most_common(5))
            )
    overhead = run.overhead_s()
    if overhead is not None:
        share = 100 * overhead * 1e3 / max(run.duration_ms, 1e-9)
        share_text = f"{share:.2f}%" if share >= 0.01 else "< 0.01%"
        lines.append(f"otel-callbacks' own time: {duration(overhead)} ({share_text} of the run)")
    return lines


def verdicts(run: RunView) -> list[str]:
    """What bound the training, and which epochs something else bound (tracing/verdicts.py)."""
    root = run.spans[0].attributes
    if sc.ATTR_BOUND_BY not in root:
        return []
    lines = [f"bound by {root[sc.ATTR_BOUND_BY]}: {root.get(sc.ATTR_BOUND_REASON, '')}"]
    others: dict[str, list[str]] = {}
    for epoch in run.epochs():
        bound_by = epoch.attributes.get(sc.ATTR_BOUND_BY)
        if bound_by is not None and bound_by != root[sc.ATTR_BOUND_BY]:
            others.setdefault(bound_by, []).append(str(epoch.attributes.get(sc.ATTR_EPOCH, "?")))
    for bound_by, epochs in others.items():
        lines.append(f"epoch {', '.join(epochs)}: bound by {bound_by}")
    return lines
