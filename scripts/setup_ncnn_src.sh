#!/usr/bin/env bash
# The ncnn C++ library source, the same version as the ncnn wheel (PyPI's sdist), with its
# generated headers (platform.h, ncnn_export.h, layer_type.h ...), for the tests that compile
# the Android demo's ncnn code (app/src/main/cpp/litedet_ncnn.cpp) against the real ncnn API;
# scripts/setup_ncnn_lib.sh builds the library itself from the same source.
#
#   bash scripts/setup_ncnn_src.sh [CACHE_DIR]
#
# CACHE_DIR defaults to $LITEDET_NCNN_SRC, else ~/.cache/litedet/ncnn-src. It holds
#   ncnn-VERSION/         the unpacked sdist (src/ has every layer, arm and x86)
#   build-headers/src/    what `cmake` configures (no compilation: about 15 s)
#   ok                    written last
# pip cannot fetch the sdist by itself (its metadata says another version, so pip discards
# it): it is downloaded from its PyPI address and checked against the sha256 below.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VERSION=$(grep -o '"ncnn==[0-9.]*"' "$ROOT/pyproject.toml" | head -1 | tr -d '"' | cut -d= -f3)
URL="https://files.pythonhosted.org/packages/b7/50/32b5172afe7d3e0dce410b7d8f4a5b7b84b942a0d69affbaedf669de52bc/ncnn-$VERSION.tar.gz"
SHA256=ad8cdd63e9755cfa8e23b9b6d9ce46156077d80298a89e7c3ba325ffccfca200
[ "$VERSION" = "1.0.20261020" ] || { echo "setup_ncnn_src.sh: pyproject pins ncnn $VERSION; update URL and SHA256 here" >&2; exit 2; }
CACHE=${1:-${LITEDET_NCNN_SRC:-$HOME/.cache/litedet/ncnn-src}}
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
if [ -f "$CACHE/ok" ] && [ "$(cat "$CACHE/ok")" = "$SHA256" ]; then
    echo "ncnn $VERSION source ready in $CACHE"
    exit 0
fi
command -v cmake >/dev/null || { echo "setup_ncnn_src.sh: cmake is needed (apt-get install cmake)" >&2; exit 1; }
T0=$(date +%s)
TAR="$CACHE/ncnn-$VERSION.tar.gz"
if [ ! -f "$TAR" ] || ! echo "$SHA256  $TAR" | sha256sum -c --quiet - 2>/dev/null; then
    curl -sSfL --retry 3 -o "$TAR.tmp" "$URL"
    echo "$SHA256  $TAR.tmp" | sha256sum -c --quiet - || { echo "setup_ncnn_src.sh: $URL has another sha256" >&2; rm -f "$TAR.tmp"; exit 1; }
    mv "$TAR.tmp" "$TAR"
fi
rm -rf "$CACHE/ncnn-$VERSION" "$CACHE/build-headers"
tar xzf "$TAR" -C "$CACHE"
cmake -S "$CACHE/ncnn-$VERSION" -B "$CACHE/build-headers" -DCMAKE_BUILD_TYPE=Release -DNCNN_VULKAN=OFF \
    -DNCNN_BUILD_TOOLS=OFF -DNCNN_BUILD_EXAMPLES=OFF -DNCNN_BUILD_BENCHMARK=OFF -DNCNN_BUILD_TESTS=OFF \
    -DNCNN_PYTHON=OFF -DNCNN_OPENMP=OFF >"$CACHE/cmake.log" 2>&1 \
    || { echo "setup_ncnn_src.sh: cmake failed; see $CACHE/cmake.log" >&2; tail -5 "$CACHE/cmake.log" >&2; exit 1; }
echo "$SHA256" >"$CACHE/ok"
echo "ncnn $VERSION source ready in $CACHE ($(( $(date +%s) - T0 )) s)"
