"""The report's plots of a run: epoch durations, the dataloader's share, batch durations, and the
loss and metric curves its epoch spans carry."""

from __future__ import annotations

from typing import Any

from .. import semconv as sc
from .report import RunView

NAMES = ("losses", "metrics", "epochs", "dataloader", "batches")  # in the page's order
_LOSSES = (sc.result_attribute("train/"),)
_METRICS = (sc.result_attribute("metrics/"), sc.result_attribute("fitness"))


def plots(run: RunView) -> list[tuple[str, Any]]:
    """(name, figure) for each plot the run has data for; names from NAMES."""
    import plotly.graph_objects as go

    plots = []
    epochs = run.epochs()
    finished = [span for span in epochs if not span.status]  # a retried attempt's results are not its epoch's
    for name, prefixes, title in (("losses", _LOSSES, "training losses"), ("metrics", _METRICS, "metrics")):
        figure = _curves(finished, prefixes, f"{title} per epoch")
        if figure is not None:
            plots.append((name, figure))
    if epochs:
        x = [s.attributes.get(sc.ATTR_EPOCH, i + 1) for i, s in enumerate(epochs)]
        figure = go.Figure(go.Scatter(x=x, y=[s.duration_ms / 1e3 for s in epochs], mode="lines+markers"))
        figure.update_layout(title="epoch duration (s)", xaxis_title="epoch", height=300)
        plots.append(("epochs", figure))
        shares = [_wait_share(run, s) for s in epochs]
        figure = go.Figure(go.Bar(x=x, y=shares))
        figure.update_layout(
            title="dataloader wait share of the sampled batches (%)", xaxis_title="epoch", height=300
        )
        plots.append(("dataloader", figure))
    for phase in (sc.PHASE_BATCH, sc.PHASE_PREDICT_BATCH, sc.PHASE_VAL_BATCH):
        batches = run.series(phase)
        if batches:
            figure = go.Figure(
                go.Scattergl(
                    x=[s.start_ms / 1e3 for s in batches], y=[s.duration_ms for s in batches], mode="markers"
                )
            )
            figure.update_layout(
                title=f"{phase} duration (ms, sampled)", xaxis_title="s from the run's start", height=300
            )
            plots.append(("batches", figure))
            break
    return plots


def _wait_share(run: RunView, epoch: Any) -> float:
    end = epoch.start_ms + epoch.duration_ms
    inside = [
        s
        for s in run.spans
        if s.is_phase and s.depth == epoch.depth + 1 and epoch.start_ms <= s.start_ms <= end
    ]
    wait = sum(s.duration_ms for s in inside if s.name == sc.PHASE_DATALOADER)
    work = sum(s.duration_ms for s in inside if s.name == sc.PHASE_BATCH)
    return round(100 * wait / (wait + work), 2) if wait + work else 0.0


def _curves(epochs: list[Any], prefixes: tuple[str, ...], title: str) -> Any:
    """One line per result whose attribute starts with one of ``prefixes``, over the epochs."""
    import plotly.graph_objects as go

    names = sorted({key for span in epochs for key in span.attributes if key.startswith(prefixes)})
    if not names:
        return None
    x = [span.attributes.get(sc.ATTR_EPOCH) for span in epochs]
    lines = [
        go.Scatter(x=x, y=[span.attributes.get(name) for span in epochs], mode="lines+markers",
                   name=name.removeprefix(sc.RESULT_PREFIX))
        for name in names
    ]  # fmt: skip
    figure = go.Figure(lines)
    figure.update_layout(title=title, xaxis_title="epoch", height=300)
    return figure
