#!/usr/bin/env bash
# Build app/src/main/cpp/litedet_ncnn.cpp (the app's preprocessing, ncnn extraction,
# output checks and postprocessing, without Android) against a desktop ncnn and
# compare its detections with the Python runtime's on the same images.
#
# usage: NCNN_PREFIX=/path/to/ncnn-install bash android_demo/host_tests/run_ncnn_check.sh BUNDLE
#   NCNN_PREFIX: a desktop ncnn build installed with `make install` (include/ncnn/net.h and
#                lib/libncnn.a), 20261020 or newer to read the bundles' param files
#   BUNDLE:      a detection bundle (e.g. out/bundle from `litedet run`)
#   PYTHON:      the interpreter with litedet installed (default: the repo's .venv)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cpp="$here/../app/src/main/cpp"
bundle="${1:?usage: NCNN_PREFIX=... $0 BUNDLE}"
prefix="${NCNN_PREFIX:?set NCNN_PREFIX to a desktop ncnn install (include/ncnn, lib/libncnn.a)}"
lib="$(find "$prefix" -name libncnn.a | head -n 1)"
[ -n "$lib" ] || { echo "no libncnn.a under $prefix" >&2; exit 2; }
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"${CXX:-g++}" -std=c++17 -O2 -Wall -Wextra -fopenmp -ffp-contract=off -I"$cpp" -I"$prefix/include/ncnn" \
    "$here/ncnn_check.cpp" "$cpp/litedet_ncnn.cpp" "$cpp/litedet_post.cpp" "$cpp/litedet_two_stage.cpp" "$lib" -lpthread -o "$out/ncnn_check"
"${PYTHON:-$repo/.venv/bin/python}" "$here/compare_with_runtime.py" "$bundle" "$out/ncnn_check"
