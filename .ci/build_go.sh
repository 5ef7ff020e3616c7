#!/usr/bin/env bash
# Builds a Go program of the end-to-end tests once per release and source, from the Go module proxy, into
# the cache the tests look in (tests/e2e/backends.py: go_program). Usage: build_go.sh NAME MODULE PACKAGE,
# where .ci/NAME holds the Go module (go.mod, go.sum, any *.go) that pins MODULE's release: the build is
# <cache>/NAME-<release>-<the first 12 hex of the sha256 of go.mod, go.sum and the *.go files, in name
# order>/NAME, the cache being $OTEL_CALLBACKS_CACHE or ~/.cache/otel-callbacks. Prints the binary's path.
set -euo pipefail
name="$1" module="$2" package="$3"
dir="$(cd "$(dirname "$0")" && pwd)/$name"
version="$(sed -n "s|^[[:space:]]*$module \(v[^ ]*\).*|\1|p" "$dir/go.mod" | head -1)"
[ -n "$version" ] || { echo "no $module version in $dir/go.mod" >&2; exit 1; }
source="$(cd "$dir" && cat go.mod go.sum $(LC_ALL=C ls | grep '\.go$' || true) | sha256sum | cut -c1-12)"
binary="${OTEL_CALLBACKS_CACHE:-$HOME/.cache/otel-callbacks}/$name-$version-$source/$name"
if [ ! -x "$binary" ]; then
    mkdir -p "$(dirname "$binary")"
    (cd "$dir" && go build -o "$binary.partial" "$package")
    mv "$binary.partial" "$binary"
fi
echo "$binary"
