"""otel-callbacks: the command line. `demo` runs the main job; `send` replays OTLP/JSON-lines files into
exporters; `report` writes them as one HTML page."""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import Settings, SettingsError


def _demo(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..telemetry import exporter_logs, providers
    from . import demo

    workdir = Path(args.dir)
    settings = Settings.from_env()
    if not os.environ.get("OTEL_CALLBACKS_DIR", "").strip():
        settings = replace(settings, output_dir=workdir / "otel")  # everything under --dir
    tel = providers.configure(settings)
    made = demo.run(workdir, epochs=args.epochs)
    flushed = providers.shutdown()  # flush everything before saying where it is
    export_failures = tel.errors_seen.get(exporter_logs.ERROR_TYPE, 0)
    epochs = f"{args.epochs} epoch{'s' if args.epochs != 1 else ''}"
    print()
    print(
        f"otel_callbacks demo: trained {epochs}, validated, predicted {made['predictions']} images, "
        f"exported {made['exported']}; everything it wrote is under {workdir.resolve()}"
    )
    written = []
    for signal, destinations in tel.destinations.items():
        for destination in destinations:
            if destination.startswith("file "):
                file = Path(destination.split(" ", 1)[1])
                written += [file] if file.is_file() else []
                status = "written" if file.is_file() else "not written"
            elif not flushed:
                status = f"NOT delivered: not flushed within {settings.shutdown_timeout:g} s"
            elif export_failures:
                status = f"NOT delivered: {export_failures} failed exports (logged above)"
            else:
                status = "delivered"
            print(f"  {signal}: {destination} ({status})")
    if written and any("file " in d for d in tel.destinations.get("traces", ())):
        print(f"  report: {write_report(written, workdir / 'report.html')}")
        print(f"  look at it in a backend later: otel-callbacks send {written[0].parent}")
    print("  timing tables: the training's above, at its end; the shorter runs in one summary after it")
    print("  send the same run to Jaeger (OTLP on 4318, UI on http://localhost:16686):")
    print("    OTEL_TRACES_EXPORTER=otlp OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 \\")
    print("    otel-callbacks demo")
    return 1 if (export_failures or not flushed) else 0


def expand(arguments: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Files named, found under directories (``*.jsonl``) or matched by globs; and what matched nothing."""
    from ..telemetry import otlp_file

    files: list[Path] = []
    missing: list[str] = []
    for argument in arguments:
        matches = [Path(m) for m in sorted(glob.glob(argument, recursive=True))] or [Path(argument)]
        found = [f for m in matches for f in ([m] if m.is_file() else sorted(m.rglob("*.jsonl")))]
        if found:
            files += [f for f in found if f not in files]
        else:
            missing.append(argument)
    # A rotated file is read with the file it was rotated from (otlp_file.read_file), when that is here.
    return [f for f in files if otlp_file.current_file(f) not in files], missing


def _inputs(command: str, arguments: Sequence[str]) -> tuple[list[Path], list[str]]:
    """The files the arguments name, each argument that names none said on stderr."""
    files, missing = expand(arguments)
    for argument in missing:
        print(f"otel-callbacks {command}: no such file, or no *.jsonl under it: {argument}", file=sys.stderr)
    return files, missing


def _tell_bad_lines(lines: Sequence[str]) -> None:
    for line in lines:
        print(line, file=sys.stderr)


def _nothing_usable(command: str) -> int:
    print(f"otel-callbacks {command}: nothing usable in the input", file=sys.stderr)
    return 2


def _send(args: argparse.Namespace) -> int:
    from .send import send

    files, missing = _inputs("send", args.files)
    if not files:
        return 2
    sent = send(files)
    _tell_bad_lines(sent.bad_lines)
    plural = "s" if len(files) != 1 else ""
    for name, signal, unit in (("traces", sent.traces, "spans"), ("metrics", sent.metrics, "metric points")):
        line = f"otel-callbacks send: {name}: {signal.read} {unit} read from {len(files)} file{plural}"
        if not signal.exporters:
            line += f", not sent: {signal.not_sent}"
        elif signal.failed_calls:
            line += (
                f", {signal.exported} exported to {', '.join(signal.exporters)}; {signal.failed_calls} of "
                f"{signal.calls} export calls failed (see the log above)"
            )
        else:
            line += f", {signal.exported} exported to {', '.join(signal.exporters)}"
        print(line, file=sys.stderr if signal.failed_calls else sys.stdout)
    if sent.bad_lines:
        print(f"otel-callbacks send: {len(sent.bad_lines)} bad lines skipped (listed above)", file=sys.stderr)
    if not sent.traces.read and not sent.metrics.read:
        return _nothing_usable("send")
    return 1 if (missing or sent.failed) else 0


def _report(args: argparse.Namespace) -> int:
    drawn = importlib.util.find_spec("plotly") is not None  # imported where the page is drawn, not before
    if not drawn and args.fail_if_slower is None:
        raise SettingsError("the report needs Plotly: pip install 'otel-callbacks[report]'")
    from .report import read

    files, missing = _inputs("report", args.files)
    if not files:
        return 2
    report = read(files)
    _tell_bad_lines(report.bad_lines)
    if not report.runs and not report.callbacks:
        return _nothing_usable("report")
    table, changes = _comparison(args.files)
    if drawn:
        from .report_html import render

        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(render(report, table), encoding="utf-8")
        print(f"otel-callbacks report: {len(report.runs)} runs -> {output.resolve()} (open it in a browser)")
    else:  # a CI gate needs no page
        print(
            "otel-callbacks report: no page written (it needs Plotly: pip install 'otel-callbacks[report]')"
        )
    if args.fail_if_slower is not None:
        return _gate(changes, args.fail_if_slower)
    return 1 if (missing or report.bad_lines) else 0


def _comparison(arguments: Sequence[str]) -> tuple[str, list[Any] | None]:
    """BEFORE AFTER: two arguments (files or directories) that each hold a run, side by side; and the
    changes (None: not two runs to compare)."""
    from .report import read
    from .report_compare import compare, comparison_table

    if len(arguments) != 2:
        return "", None
    before, after = (read(expand([argument])[0]) for argument in arguments)
    changes = compare(before, after)
    return (comparison_table(changes, *arguments) if changes else ""), changes


def _gate(changes: list[Any] | None, percent: float) -> int:
    """``--fail-if-slower PCT``: 1, and one line naming it, where the epoch or a phase got slower beyond
    noise and PCT; 2 where the two arguments do not each hold a run."""
    from .report_compare import gated, said, slower

    if changes is None:
        print(
            "otel-callbacks report: --fail-if-slower needs BEFORE and AFTER each holding a run",
            file=sys.stderr,
        )
        return 2
    found = sorted(slower(changes, percent), key=lambda c: -(c.after.mean / c.before.mean))
    if not found:
        unjudged = [c.name for c in gated(changes) if c.noise is None]
        also = f" (not judged, too few values: {', '.join(unjudged)})" if unjudged else ""
        print(f"otel-callbacks report: nothing slower beyond noise and {percent:g}%{also}")
        return 0
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    print(
        f"otel-callbacks report: slower beyond noise and {percent:g}%: {said(found[0])}{more}",
        file=sys.stderr,
    )
    return 1


def write_report(files: list[Path], output: Path) -> str:
    """The demo's report beside its data: the path, or why there is none."""
    if importlib.util.find_spec("plotly") is None:
        return "none (pip install 'otel-callbacks[report]' for an HTML report)"
    from .report import read
    from .report_html import render

    output.write_text(render(read(files)), encoding="utf-8")
    return f"{output.resolve()} (open it in a browser)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="otel-callbacks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="train, validate, predict and export a YOLO model on generated data, offline, instrumented",
    )
    demo.add_argument("--epochs", type=int, default=3, help="training epochs (default 3)")
    demo.add_argument(
        "--dir", default="runs/otel-demo", help="where it writes data, runs, telemetry (runs/otel-demo)"
    )
    demo.set_defaults(handler=_demo)
    send = commands.add_parser(
        "send",
        help="export OTLP/JSON-lines files (the embedded default's output) with the exporters that "
        "OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER name (default: otlp)",
        description="Exit status: 0 all sent, 1 something failed (bad lines, failed exports), "
        "2 nothing usable.",
    )
    send.add_argument("files", nargs="+", help="files, directories (their *.jsonl) or globs")
    send.set_defaults(handler=_send)
    report = commands.add_parser(
        "report",
        help="write one self-contained HTML page (answers, traces, tables, plots) from OTLP/JSON-lines files",
        description="Two arguments that each hold a run (BEFORE AFTER, files or directories): the page "
        "opens with them side by side, each change marked beyond the runs' noise or not. Exit status: 0 "
        "written, 1 written with bad lines skipped (with --fail-if-slower: something got slower beyond "
        "noise and PCT), 2 nothing usable.",
    )
    report.add_argument("files", nargs="+", help="files, directories (their *.jsonl) or globs")
    report.add_argument("-o", "--output", default="report.html", help="the page to write (report.html)")
    report.add_argument(
        "--fail-if-slower",
        type=float,
        metavar="PCT",
        help="with BEFORE AFTER: exit 1 when the epoch or a phase (the step among them) got slower beyond "
        "the runs' noise and by more than PCT percent (a CI gate)",
    )
    report.set_defaults(handler=_report)
    args = parser.parse_args(argv)
    gate = args.fail_if_slower if args.command == "report" else None
    if gate is not None and (len(args.files) != 2 or not 0 <= gate < float("inf")):
        parser.error(
            f"--fail-if-slower takes a percentage >= 0 and two runs, BEFORE AFTER; got {gate:g} and "
            f"{len(args.files)} argument(s)"
        )
    if args.command == "demo" and args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")
    try:
        return args.handler(args)
    except SettingsError as exc:
        print(f"otel-callbacks: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
