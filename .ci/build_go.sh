#!/usr/bin/env bash
# Builds a Go program of the end-to-end tests once per release, from the Go module proxy, into the cache
# the tests look in (tests/e2e/backends.py: go_program). Usage: build_go.sh NAME MODULE PACKAGE, where
# .ci/NAME holds the Go module (go.mod, go.sum) that pins MODULE's release, which names the build:
# <cache>/NAME-<release>/NAME, the cache being $OTEL_CALLBACKS_CACHE or ~/.cache/otel-callbacks.
# Prints the binary's path.
set -euo pipefail
name="$1" module="$2" package="$3"
dir="$(cd "$(dirname "$0")" && pwd)/$name"
version="$(sed -n "s|^[[:space:]]*$module \(v[^ ]*\).*|\1|p" "$dir/go.mod" | head -1)"
[ -n "$version" ] || { echo "no $module version in $dir/go.mod" >&2; exit 1; }
binary="${OTEL_CALLBACKS_CACHE:-$HOME/.cache/otel-callbacks}/$name-$version/$name"
if [ ! -x "$binary" ]; then
    mkdir -p "$(dirname "$binary")"
    (cd "$dir" && go build -o "$binary.partial" "$package")
    mv "$binary.partial" "$binary"
fi
echo "$binary"
