#!/usr/bin/env bash
# Builds Jaeger v2 for the end-to-end tests, once per release: from the Go module proxy, through this
# tool module (`go install ...@v1.75.0` refuses the module: its go.mod has a replace directive), into
# the cache the tests look in (tests/e2e/jaeger.py). Prints the binary's path.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version="$(sed -n 's|^\s*github.com/jaegertracing/jaeger \(v[^ ]*\).*|\1|p' "$here/go.mod")"
[ -n "$version" ] || { echo "no jaeger version in $here/go.mod" >&2; exit 1; }
binary="${OTEL_CALLBACKS_CACHE:-$HOME/.cache/otel-callbacks}/jaeger-$version/jaeger"
if [ ! -x "$binary" ]; then
    mkdir -p "$(dirname "$binary")"
    (cd "$here" && go build -o "$binary.partial" github.com/jaegertracing/jaeger/cmd/jaeger)
    mv "$binary.partial" "$binary"
fi
echo "$binary"
