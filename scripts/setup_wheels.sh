#!/usr/bin/env bash
# A local wheel cache for the runtime-only install test (tests/test_packaging.py): the
# runtime's pinned dependencies plus the build backend, so that test can install
# `litedet` (runtime side only) into a fresh venv offline. Idempotent.
# Usage: bash scripts/setup_wheels.sh [CACHE]   (default: $LITEDET_WHEELS or ~/.cache/litedet/wheels)
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-${LITEDET_WHEELS:-$HOME/.cache/litedet/wheels}}"
py="${PYTHON:-.venv/bin/python}"
[ -x "$py" ] || py=python3
mkdir -p "$dest"
# the runtime pins, read from pyproject.toml (written once there)
mapfile -t pins < <("$py" - <<'PY'
import tomllib
p = tomllib.load(open("pyproject.toml", "rb"))
print("\n".join(p["project"]["dependencies"] + p["build-system"]["requires"]))
PY
)
if "$py" -m pip download --quiet --disable-pip-version-check --only-binary=:all: -d "$dest" "${pins[@]}"; then
  echo "runtime wheels ready in $dest: $(ls "$dest" | wc -l) files"
else
  echo "setup_wheels.sh: could not download the runtime wheels into $dest" >&2
  exit 1
fi
