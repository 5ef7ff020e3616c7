#!/usr/bin/env bash
# Regenerates dashboard.schema.json (JSON Schema, draft-07) from the TypeScript
# types of the npm package @grafana/schema, in a throwaway temp dir.
# Requires: Node.js >= 20 and npm with access to the npm registry.
set -euo pipefail

GRAFANA_SCHEMA_VERSION=12.4.11          # @grafana/schema (latest 12.x at generation time)
TS_JSON_SCHEMA_GENERATOR_VERSION=2.4.0  # last release supporting Node 20 (2.5.0+ need Node >= 22)
TYPESCRIPT_VERSION=5.9.3

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="$HERE/dashboard.schema.json"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

cd "$WORK"
npm init -y >/dev/null
npm install --no-audit --no-fund --save-exact \
  "@grafana/schema@${GRAFANA_SCHEMA_VERSION}" \
  "ts-json-schema-generator@${TS_JSON_SCHEMA_GENERATOR_VERSION}" \
  "typescript@${TYPESCRIPT_VERSION}"

# The raw, CUE-generated dashboard types (self-contained, interface `Dashboard`).
# (The "veneer" Dashboard exported from the package root fails to convert.)
./node_modules/.bin/ts-json-schema-generator \
  --path node_modules/@grafana/schema/dist/types/raw/dashboard/x/types.gen.d.ts \
  --type Dashboard \
  --no-type-check \
  --expose all \
  --additional-properties \
  --out "$WORK/dashboard.schema.json"

mv "$WORK/dashboard.schema.json" "$OUT"
echo "wrote $OUT"
