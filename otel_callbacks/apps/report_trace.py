"""The report's trace view, as trace viewers draw one (Jaeger's timeline, Perfetto): one row per span
in tree order with its name and duration, nested and collapsible (epochs, iterations and trials
collapsed at first), bars on the run's time axis, phases, callbacks, slow and failed calls told apart
by colour; a click shows the span's attributes and events. Plain DOM, no plotting library."""

from __future__ import annotations

from typing import Any

from .report import RunView


def kind(span: Any) -> str:
    if span.status:
        return "error"
    if span.slow:
        return "slow"
    return "phase" if span.is_phase else "callback"


def rows(run: RunView) -> list[list[Any]]:
    """[depth, start ms, duration ms, name, kind] per span, depth first (RunView.spans' order)."""
    return [[s.depth, round(s.start_ms, 3), round(s.duration_ms, 3), s.name, kind(s)] for s in run.spans]


CSS = """
.trace { font: 12px system-ui, sans-serif; border: 1px solid #ddd; max-height: 70vh; overflow: auto; }
.trace .row { display: grid; grid-template-columns: 40% 60%; cursor: pointer; }
.trace .row { border-bottom: 1px solid #f2f2f2; }
.trace .row:hover { background: #f5f8fc; }
.trace .row.selected { background: #dce8f6; }
.trace .label { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.trace .toggle { display: inline-block; width: 1.2em; color: #555; }
.trace .took { color: #777; margin-left: .5em; }
.trace .lane { position: relative; height: 12px; margin: 2px 8px 0 0; }
.trace .bar { position: absolute; top: 0; bottom: 0; min-width: 1px; background: #4c78a8; }
.trace .row.callback .bar { background: #9ecae9; }
.trace .row.slow .bar { background: #f58518; }
.trace .row.error .bar { background: #e45756; }
.trace .row.slow .label { color: #a85200; }
.trace .row.error .label { color: #b3261e; font-weight: bold; }
.trace .axis { display: grid; grid-template-columns: 40% 60%; color: #777; border-bottom: 1px solid #ccc; }
.trace .axis span:last-child { display: flex; justify-content: space-between; margin-right: 8px; }
"""

JS = """
const COLLAPSED_AT_FIRST = new Set(["epoch", "iteration", "trial"]);
function took(ms) {
  if (ms < 1) return (ms * 1000).toFixed(0) + " us";
  if (ms < 1000) return ms.toPrecision(3) + " ms";
  return (ms / 1000).toPrecision(3) + " s";
}
function buildTrace(run) {
  const spans = TRACES[run], box = document.getElementById(run + "-trace");
  const total = Math.max(spans.length ? spans[0][1] + spans[0][2] : 1, 1e-9);
  const axis = document.createElement("div");
  axis.className = "axis";
  axis.innerHTML = "<span>span</span><span><span>0</span><span>" + took(total / 2) + "</span><span>" +
    took(total) + "</span></span>";
  box.appendChild(axis);
  const rows = document.createDocumentFragment();
  spans.forEach(([depth, start, ms, name, kind], index) => {
    const row = document.createElement("div");
    row.className = "row " + kind;
    row.dataset.index = index;
    const parent = index + 1 < spans.length && spans[index + 1][0] > depth;
    if (parent) row.classList.add("parent");
    if (parent && COLLAPSED_AT_FIRST.has(name)) row.classList.add("collapsed");
    const label = document.createElement("span");
    label.className = "label";
    label.style.paddingLeft = (depth * 14) + "px";
    label.innerHTML = "<span class='toggle'></span>";
    label.appendChild(document.createTextNode(name));
    const length = document.createElement("span");
    length.className = "took";
    length.textContent = took(ms);
    label.appendChild(length);
    const lane = document.createElement("span");
    lane.className = "lane";
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.left = (100 * start / total) + "%";
    bar.style.width = (100 * ms / total) + "%";
    lane.appendChild(bar);
    row.append(label, lane);
    rows.appendChild(row);
  });
  box.appendChild(rows);
  showRows(run);
  box.addEventListener("click", event => {
    const row = event.target.closest(".row");
    if (!row) return;
    if (event.target.classList.contains("toggle") && row.classList.contains("parent")) {
      row.classList.toggle("collapsed");
      showRows(run);
    } else {
      select(run, Number(row.dataset.index));
    }
  });
}
function showRows(run) {
  let hiddenBelow = Infinity;  // the depth of the collapsed row being skipped
  document.getElementById(run + "-trace").querySelectorAll(".row").forEach(row => {
    const depth = TRACES[run][Number(row.dataset.index)][0];
    if (depth > hiddenBelow) { row.style.display = "none"; return; }
    row.style.display = "";
    const collapsed = row.classList.contains("collapsed");
    hiddenBelow = collapsed ? depth : Infinity;
    if (row.classList.contains("parent")) row.firstChild.firstChild.textContent = collapsed ? "▸" : "▾";
  });
}
function select(run, index) {
  const box = document.getElementById(run + "-trace");
  box.querySelectorAll(".row.selected").forEach(row => row.classList.remove("selected"));
  const row = box.querySelector(".row[data-index='" + index + "']");
  row.classList.add("selected");
  document.getElementById(run + "-detail").textContent = JSON.stringify(DETAILS[run][index], null, 2);
  return row;
}
function focusSpan(run, index) {  // open every row above it, show it and its details
  const spans = TRACES[run];
  let depth = spans[index][0];
  for (let i = index - 1; i >= 0 && depth > 0; i--) {
    if (spans[i][0] < depth) {
      depth = spans[i][0];
      const above = document.getElementById(run + "-trace").querySelector(".row[data-index='" + i + "']");
      above.classList.remove("collapsed");
    }
  }
  showRows(run);
  select(run, index).scrollIntoView({block: "center"});
  return false;
}
Object.keys(TRACES).forEach(buildTrace);
"""
