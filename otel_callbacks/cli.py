"""``otel-callbacks``: the command line. ``demo`` runs the main job; ``send`` replays trace files."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from . import demo, telemetry

    tel = telemetry.ensure_configured()
    output = tel.output.path if tel.output is not None else None
    made = demo.run(Path(args.dir), epochs=args.epochs)
    telemetry.shutdown()  # flush everything before saying where it is
    print()
    print(
        f"otel_callbacks demo: trained {args.epochs} epochs, validated, predicted "
        f"{made['predictions']} images, exported {made['exported']}"
    )
    if output is not None:
        print(f"  trace and metrics (OTLP/JSON lines): {output.resolve()}")
        print(f"  replay them into a backend later: otel-callbacks send {output.resolve()}")
    else:
        print("  telemetry went to the exporters configured by OTEL_* variables")
    print("  timing tables: printed above at the end of each run (train, val, predict, export)")
    print("  send the same run to Jaeger (OTLP on 4318, UI on http://localhost:16686):")
    print(
        "    OTEL_TRACES_EXPORTER=otlp OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 otel-callbacks demo"
    )
    return 0


def _send(args: argparse.Namespace) -> int:
    from .replay import send

    missing = [p for p in args.files if not Path(p).is_file()]
    if missing:
        print(f"otel-callbacks send: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    sent = send(args.files)
    print(f"otel-callbacks send: {sent.spans} spans and {sent.metric_points} metric points exported")
    if sent.failed_exports:
        print(
            f"otel-callbacks send: {sent.failed_exports} export calls failed (see the log above)",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="otel-callbacks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="train, validate, predict and export a YOLO model on generated data, offline, instrumented",
    )
    demo.add_argument("--epochs", type=int, default=3, help="training epochs (default 3)")
    demo.add_argument("--dir", default="runs/otel-demo", help="work directory (default runs/otel-demo)")
    demo.set_defaults(handler=_demo)
    send = commands.add_parser(
        "send",
        help="export OTLP/JSON-lines files (the embedded default's output) with the exporters that "
        "OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER name (default: otlp)",
    )
    send.add_argument("files", nargs="+", help="files written under OTEL_CALLBACKS_DIR")
    send.set_defaults(handler=_send)
    args = parser.parse_args(argv)
    if args.command == "demo" and args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
