#!/usr/bin/env bash
# Build and run the desktop checks of the Android demo's pure C++ helpers
# (frame rotation/YUV maths, asset-name discovery, output shape checks, the
# letterbox arithmetic used by the JNI code) with the host compiler.
# Usage: bash android_demo/host_tests/run.sh   (CXX=clang++ to pick another compiler)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cpp="$here/../app/src/main/cpp"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
# the core: every litedet_*.cpp but the runner, the JNI glue, the kinds' ncnn halves and the C API
core=()
for f in "$cpp"/litedet_*.cpp; do
    case "$f" in *_ncnn.cpp|*_capi.cpp|*/litedet_jni.cpp) ;; *) core+=("$f") ;; esac
done
"${CXX:-g++}" -std=c++17 -O1 -Wall -Wextra -Werror -ffp-contract=off -I"$cpp" \
    "$here/test_demo_helpers.cpp" "${core[@]}" -o "$out/test_demo_helpers"
"$out/test_demo_helpers"
