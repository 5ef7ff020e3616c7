"""A resumed training linked to the run it continues.

``resume=True`` continues from ``last.pt`` in a new ``train()``, so in a new trace. Each training's
root leaves its ids beside its checkpoints (``weights/otel_trace.json``; ``last.pt`` is never
touched); a training that resumes from that directory links its root to them and names the epoch it
starts from. Epoch spans keep Ultralytics' numbering.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from opentelemetry.trace import Link, SpanContext, TraceFlags

from .. import semconv as sc

MARK = "otel_trace.json"


def resumed_run(trainer: Any) -> tuple[list[Link], dict[str, Any]]:
    """The link to the run this training resumes and the root's attribute naming it; none for a new
    training, or when that run left no ids (it ran without otel_callbacks)."""
    resume = getattr(getattr(trainer, "args", None), "resume", None)
    if not getattr(trainer, "resume", False) or not isinstance(resume, (str, os.PathLike)):
        return [], {}
    try:
        mark = json.loads((Path(resume).parent / MARK).read_text())
        context = SpanContext(
            int(mark["trace_id"], 16), int(mark["span_id"], 16), True, TraceFlags(TraceFlags.SAMPLED)
        )
    except (OSError, ValueError, KeyError, TypeError):
        return [], {}
    if not context.is_valid:
        return [], {}
    return [Link(context)], {sc.ATTR_RESUME_TRACE_ID: mark["trace_id"]}


def resume_epoch(trainer: Any) -> dict[str, int]:
    """The first epoch a resumed training trains (1-based, as epoch spans count), once it is known
    (``start_epoch`` is read from the checkpoint before ``on_pretrain_routine_end``)."""
    if not getattr(trainer, "resume", False):
        return {}
    start = getattr(trainer, "start_epoch", None)
    return {sc.ATTR_RESUME_EPOCH: start + 1} if isinstance(start, int) else {}


def leave_mark(trainer: Any, span: Any) -> None:
    """Write the root's ids beside the checkpoints, for a later resume (replaced atomically)."""
    wdir = getattr(trainer, "wdir", None)  # weights/, where last.pt goes
    context = span.get_span_context() if span is not None else None
    if not wdir or context is None or not context.is_valid or not Path(wdir).is_dir():
        return
    directory = Path(wdir)
    mark = {"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x")}
    temporary = directory / f".{MARK}.{os.getpid()}"
    temporary.write_text(json.dumps(mark))
    os.replace(temporary, directory / MARK)
