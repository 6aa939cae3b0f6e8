#!/usr/bin/env bash
# The ncnn C++ library (static, CPU only), built from PyPI's sdist of the pinned ncnn wheel,
# for x86_64 and cross-built for aarch64, so that the demo's own C++ pipeline
# (android_demo/app/src/main/cpp: litedet_ncnn.cpp + the postprocessing core) links into
# `litedet_cpp` (android_demo/host_tests/litedet_cpp.cpp) on the desktop and under qemu.
#
#   bash scripts/setup_ncnn_lib.sh [x86_64|aarch64|all]     (default: all)
#
# Cache: $LITEDET_NCNN_SRC, else ~/.cache/litedet/ncnn-src (shared with setup_ncnn_src.sh):
#   lib-x86_64/install/{include/ncnn,lib/libncnn.a}    host build (g++)
#   lib-aarch64/install/{include/ncnn,lib/libncnn.a}   g++-aarch64-linux-gnu (static programs)
#   lib-ARCH/ok                                         the options' hash, written last
# A build is skipped when its ok file holds the hash of this script's options.
#
# Reduced on purpose, to keep CI short (measured in benchmarks/README.md):
#  - the layers: only KEEP below: every layer type in every bundle of the registry
#    (tests/test_litedet_cpp.py checks each converted bundle against the built list), plus
#    the ones ncnn layers create internally (Padding, Flatten, Packing, Cast, activations).
#  - int8 kernels on (litedet quantize's bundles), no bf16 kernels, no Vulkan, no tools.
#  - x86: SSE2, AVX, FMA, F16C and AVX2 kernels (runtime dispatch), no AVX-512/VNNI ones:
#    on an AVX-512 machine litedet_cpp runs ncnn's AVX2 kernels, the wheel its AVX-512 ones.
#  - aarch64: NEON + ARMv8.2 fp16 (asimdhp, what the phones' fp16 arithmetic uses), fp16fml and
#    dot product (asimddp, what a cortex-a76's int8 convolutions use); no i8mm/bf16/SVE.
# OpenMP on (threads > 1); NCNN_SIMPLEOCV on, so that litedet_cpp reads JPEG/PNG/BMP/PPM with
# ncnn's own imread (stb_image), as a board without OpenCV would.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WHICH=${1:-all}
case "$WHICH" in
    x86_64|aarch64) ARCHES=$WHICH ;;
    all) ARCHES="x86_64 aarch64" ;;
    *) echo "setup_ncnn_lib.sh: unknown target '$WHICH' (expected x86_64, aarch64 or all)" >&2; exit 2 ;;
esac
bash "$ROOT/scripts/setup_ncnn_src.sh" >/dev/null
CACHE=${LITEDET_NCNN_SRC:-$HOME/.cache/litedet/ncnn-src}
SRC=$(ls -d "$CACHE"/ncnn-*/ | grep -v build | head -1)
command -v cmake >/dev/null || { echo "setup_ncnn_lib.sh: cmake is needed (apt-get install cmake)" >&2; exit 1; }

KEEP="Input Convolution ConvolutionDepthWise Deconvolution DeconvolutionDepthWise Concat ShuffleChannel Slice
Split BinaryOp UnaryOp Reshape Permute Pooling Interp ReLU Clip Sigmoid Swish HardSwish HardSigmoid ELU PReLU
TanH GELU Mish InnerProduct Gemm MatMul Softmax Flatten Crop Padding Eltwise BatchNorm Scale Bias Dropout Noop
MemoryData Packing Cast Reduction ExpandDims Squeeze PixelShuffle Quantize Dequantize Requantize Normalize"
ALL=$(grep -o 'ncnn_add_layer([A-Za-z0-9]*' "$SRC/src/CMakeLists.txt" | cut -d'(' -f2)
LAYER_FLAGS=()
for l in $ALL; do
    if echo " $(echo $KEEP) " | grep -q " $l "; then LAYER_FLAGS+=("-DWITH_LAYER_$(echo "$l" | tr 'A-Z' 'a-z')=ON")
    else LAYER_FLAGS+=("-DWITH_LAYER_$(echo "$l" | tr 'A-Z' 'a-z')=OFF"); fi
done
COMMON=(-DCMAKE_BUILD_TYPE=Release -DNCNN_VULKAN=OFF -DNCNN_BUILD_TOOLS=OFF -DNCNN_BUILD_EXAMPLES=OFF
        -DNCNN_BUILD_BENCHMARK=OFF -DNCNN_BUILD_TESTS=OFF -DNCNN_PYTHON=OFF -DNCNN_SHARED_LIB=OFF
        -DNCNN_OPENMP=ON -DNCNN_SIMPLEOCV=ON -DNCNN_INT8=ON -DNCNN_BF16=OFF "${LAYER_FLAGS[@]}")
X86=(-DNCNN_AVX512=OFF -DNCNN_AVXVNNI=OFF -DNCNN_AVXNECONVERT=OFF -DNCNN_XOP=OFF -DNCNN_FMA4=OFF)
ARM=(-DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 -DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc
     -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++ -DNCNN_ARM82DOT=ON -DNCNN_ARM84BF16=OFF -DNCNN_ARM84I8MM=OFF
     -DNCNN_ARM86SVE=OFF)

for arch in $ARCHES; do
    if [ "$arch" = aarch64 ]; then
        command -v aarch64-linux-gnu-g++ >/dev/null || { echo "setup_ncnn_lib.sh: aarch64-linux-gnu-g++ is needed (bash scripts/setup_arm.sh installs it)" >&2; exit 1; }
        FLAGS=("${COMMON[@]}" "${ARM[@]}")
    else
        FLAGS=("${COMMON[@]}" "${X86[@]}")
    fi
    HASH=$(printf '%s\n' "$SRC" "${FLAGS[@]}" | sha256sum | cut -c1-16)
    OUT="$CACHE/lib-$arch"
    mkdir -p "$OUT"
    exec 9>"$OUT/.lock"
    flock 9
    if [ -f "$OUT/ok" ] && [ "$(cat "$OUT/ok")" = "$HASH" ] && [ -f "$OUT/install/lib/libncnn.a" ]; then
        echo "ncnn library ($arch) ready in $OUT/install"
        continue
    fi
    T0=$(date +%s)
    rm -rf "$OUT/build" "$OUT/install" "$OUT/ok"
    echo "building the ncnn library for $arch (cmake, -j$(nproc); log: $OUT/build.log) ..."
    if ! { cmake -S "$SRC" -B "$OUT/build" "${FLAGS[@]}" -DCMAKE_INSTALL_PREFIX="$OUT/install" \
           && cmake --build "$OUT/build" -j"$(nproc)" && cmake --install "$OUT/build"; } >"$OUT/build.log" 2>&1; then
        echo "setup_ncnn_lib.sh: the $arch build failed; see $OUT/build.log" >&2
        tail -5 "$OUT/build.log" >&2
        exit 1
    fi
    # the layer types this build registers, for the check that every bundle's layers are in it
    grep -v ', 0},' "$OUT/build/src/layer_registry.h" | grep -o '^{"[A-Za-z0-9]*"' | tr -d '{"' | sort -u \
        >"$OUT/install/layers.txt"
    echo "$(( $(date +%s) - T0 ))" >"$OUT/build_seconds"
    echo "$HASH" >"$OUT/ok"
    echo "ncnn library ($arch) built in $(cat "$OUT/build_seconds") s: $OUT/install"
done
