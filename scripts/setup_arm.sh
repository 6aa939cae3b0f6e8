#!/usr/bin/env bash
# Set up an aarch64 environment that runs litedet bundles under qemu-user, with
# real ARM fp16 arithmetic (x86 ncnn never does fp16 math), and the tools for
# the ARM instruction-count benchmark. No chroot, no binfmt: qemu-aarch64 runs
# the aarch64 python of a sysroot unpacked from Debian's arm64 packages.
#
#   bash scripts/setup_arm.sh [CACHE_DIR] [--verify]
#
# CACHE_DIR defaults to $LITEDET_ARM_CACHE, else ~/.cache/litedet/arm. What it
# holds (every step is skipped when its result is already there):
#   sysroot/   Debian 12 arm64 python3.11 + the C/C++ runtime libraries (dpkg -x)
#   site/      the aarch64 wheels of numpy and ncnn, same versions as pyproject.toml
#   plugin/    libinsn_count.so, the TCG plugin built from benchmarks/arm/insn_count.c
#   bin/       fp16_loop, a static aarch64 program built from benchmarks/arm/fp16_loop.c
#   env.json   written last, after the environment was verified under qemu
# Host packages (apt-get, needs root): qemu-user, g++-aarch64-linux-gnu, gcc.
# The arm64 architecture is added to dpkg (dpkg --add-architecture arm64) so
# that `apt-get download` can fetch arm64 packages; nothing arm64 is installed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=""
FORCE_VERIFY=0
for arg in "$@"; do
    case "$arg" in
        --verify) FORCE_VERIFY=1 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        -*) echo "setup_arm.sh: unknown option $arg (known: --verify)" >&2; exit 2 ;;
        *) CACHE=$arg ;;
    esac
done
CACHE=${CACHE:-${LITEDET_ARM_CACHE:-$HOME/.cache/litedet/arm}}
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)

# One setup at a time per cache.
exec 9>"$CACHE/.lock"
flock 9

T_START=$(date +%s%N)
CHANGED=0
HOSTPY=python3
if [ -x "$ROOT/.venv/bin/python" ]; then HOSTPY=$ROOT/.venv/bin/python; fi
elapsed() { local ms=$(( ($(date +%s%N) - $1) / 1000000 )); printf '%d.%d' $((ms / 1000)) $(((ms % 1000) / 100)); }
step() { STEP_T0=$(date +%s%N); printf '%-30s' "$1"; }
done_step() { echo "$1 ($(elapsed "$STEP_T0") s)"; }

SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null; then SUDO=sudo; fi
fi
apt_install() {
    if [ "$(id -u)" != 0 ] && [ -z "$SUDO" ]; then
        echo "setup_arm.sh: need root to install $*: run 'apt-get install -y $*' as root" >&2
        exit 1
    fi
    if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >"$CACHE/apt.log" 2>&1; then
        $SUDO apt-get update >>"$CACHE/apt.log" 2>&1
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >>"$CACHE/apt.log" 2>&1 \
            || { echo "setup_arm.sh: apt-get install $* failed; see $CACHE/apt.log" >&2; tail -5 "$CACHE/apt.log" >&2; exit 1; }
    fi
}

# ---- 1. host tools -------------------------------------------------------------
step "host tools"
NEED=()
command -v qemu-aarch64 >/dev/null || NEED+=(qemu-user)
command -v aarch64-linux-gnu-g++ >/dev/null || NEED+=(g++-aarch64-linux-gnu)
command -v gcc >/dev/null || NEED+=(gcc libc6-dev)
command -v setarch >/dev/null || NEED+=(util-linux)
if [ ${#NEED[@]} -gt 0 ]; then
    apt_install "${NEED[@]}"
    CHANGED=1
    done_step "installed ${NEED[*]}"
else
    done_step "present"
fi
QEMU=$(command -v qemu-aarch64)
if ! "$QEMU" -h | grep -q -- '-plugin'; then
    echo "setup_arm.sh: $QEMU was built without TCG plugin support (no -plugin option)" >&2
    exit 1
fi

# ---- 2. aarch64 sysroot (Debian arm64 packages, unpacked) ------------------------
# python3.11 and what it and the ncnn/numpy wheels load: found by running them.
ARM_PKGS=(python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libstdc++6 libgcc-s1 libgomp1
          zlib1g libexpat1 libffi8 libssl3 libbz2-1.0 liblzma5 libcrypt1 libuuid1)
SYSROOT=$CACHE/sysroot
step "aarch64 sysroot"
if [ -f "$SYSROOT/.complete" ] && [ "$(cat "$SYSROOT/.complete")" = "${ARM_PKGS[*]}" ]; then
    done_step "cached"
else
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        $SUDO dpkg --add-architecture arm64
        $SUDO apt-get update >"$CACHE/apt.log" 2>&1
    fi
    mkdir -p "$CACHE/debs"
    (cd "$CACHE/debs" && rm -f ./*.deb &&
        { apt-get download -o APT::Sandbox::User=root "${ARM_PKGS[@]/%/:arm64}" >"$CACHE/download.log" 2>&1 ||
          { $SUDO apt-get update >>"$CACHE/apt.log" 2>&1 &&
            apt-get download -o APT::Sandbox::User=root "${ARM_PKGS[@]/%/:arm64}" >>"$CACHE/download.log" 2>&1; }; }) ||
        { echo "setup_arm.sh: apt-get download of the arm64 packages failed; see $CACHE/download.log" >&2;
          tail -5 "$CACHE/download.log" >&2; exit 1; }
    rm -rf "$SYSROOT" "$SYSROOT.tmp"
    mkdir -p "$SYSROOT.tmp"
    for deb in "$CACHE"/debs/*.deb; do dpkg -x "$deb" "$SYSROOT.tmp"; done
    mv "$SYSROOT.tmp" "$SYSROOT"
    CHANGED=1
    rm -f "$CACHE/env.json"
    done_step "built from ${#ARM_PKGS[@]} packages"
fi
ARM_PY=$SYSROOT/usr/bin/python3.11
[ -x "$ARM_PY" ] || { echo "setup_arm.sh: $ARM_PY missing after unpacking; delete $SYSROOT and run again" >&2; exit 1; }

# ---- 3. aarch64 wheels: numpy + ncnn, the versions pinned in pyproject.toml -------
pin() { grep -oE "\"$1==[^\"]+\"" "$ROOT/pyproject.toml" | head -1 | tr -d '"' | cut -d= -f3; }
NCNN_V=$(pin ncnn); NUMPY_V=$(pin numpy)
[ -n "$NCNN_V" ] && [ -n "$NUMPY_V" ] || { echo "setup_arm.sh: could not read the ncnn/numpy pins from $ROOT/pyproject.toml" >&2; exit 1; }
SITE=$CACHE/site
step "aarch64 wheels"
if [ -f "$SITE/.complete" ] && [ "$(cat "$SITE/.complete")" = "ncnn==$NCNN_V numpy==$NUMPY_V" ]; then
    done_step "cached (ncnn $NCNN_V, numpy $NUMPY_V)"
else
    mkdir -p "$CACHE/wheels"
    rm -f "$CACHE"/wheels/*.whl
    "$HOSTPY" -m pip download --quiet --platform manylinux_2_28_aarch64 --only-binary=:all: --python-version 3.11 \
        --no-deps -d "$CACHE/wheels" "ncnn==$NCNN_V" "numpy==$NUMPY_V" >"$CACHE/pip.log" 2>&1 ||
        { echo "setup_arm.sh: pip download failed; see $CACHE/pip.log" >&2; tail -5 "$CACHE/pip.log" >&2; exit 1; }
    rm -rf "$SITE" "$SITE.tmp"
    mkdir -p "$SITE.tmp"
    for whl in "$CACHE"/wheels/*.whl; do "$HOSTPY" -m zipfile -e "$whl" "$SITE.tmp"; done
    mv "$SITE.tmp" "$SITE"
    echo "ncnn==$NCNN_V numpy==$NUMPY_V" >"$SITE/.complete"
    CHANGED=1
    rm -f "$CACHE/env.json"
    done_step "ncnn $NCNN_V, numpy $NUMPY_V"
fi

# ---- 4. bytecode: qemu runs python ~4x slower than native, so compile once -------
# (Debian's stdlib .deb ships no .pyc; without them every start recompiles
# numpy and the stdlib: 4.9 s instead of 1.3 s per `import numpy, ncnn`.)
step "bytecode (.pyc)"
if [ -f "$SYSROOT/.complete" ] && [ -f "$SITE/.pyc-complete" ]; then
    done_step "cached"
else
    # Any CPython 3.11 writes the same .pyc format (magic 3495); the host one is
    # ~20x faster than the emulated one, which is the fallback.
    if "$HOSTPY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
        COMPILER=("$HOSTPY"); HOW="host python"
    else
        COMPILER=("$QEMU" -cpu max -L "$SYSROOT" "$ARM_PY"); HOW="emulated python"
    fi
    "${COMPILER[@]}" -m compileall -q -j0 "$SYSROOT/usr/lib/python3.11" "$SITE" >"$CACHE/compileall.log" 2>&1 || true
    echo "${ARM_PKGS[*]}" >"$SYSROOT/.complete"
    touch "$SITE/.pyc-complete"
    done_step "compiled with the $HOW"
fi

# cached_build OUTPUT "SOURCES" COMMAND...: COMMAND writes OUTPUT.tmp; it runs only when
# OUTPUT is missing or the sha256 of SOURCES changed since it was built.
src_hash() { cat "$@" | sha256sum | cut -c1-16; }
cached_build() {
    local out=$1 h
    read -r -a srcs <<<"$2"
    shift 2
    h=$(src_hash "${srcs[@]}")
    if [ -f "$out" ] && [ "$(cat "$out.src-sha256" 2>/dev/null)" = "$h" ]; then
        done_step "cached"
        return
    fi
    mkdir -p "$(dirname "$out")"
    "$@"
    mv "$out.tmp" "$out"
    echo "$h" >"$out.src-sha256"
    CHANGED=1
    done_step "built"
}

# ---- 5. the instruction-count plugin (host code, loaded by qemu) -----------------
PLUGIN=$CACHE/plugin/libinsn_count.so
step "TCG plugin libinsn_count.so"
cached_build "$PLUGIN" "$ROOT/benchmarks/arm/insn_count.c $ROOT/benchmarks/arm/qemu_plugin_min.h" \
    gcc -O2 -Wall -Wextra -Werror -fPIC -shared -fvisibility=hidden -I"$ROOT/benchmarks/arm" \
        -o "$PLUGIN.tmp" "$ROOT/benchmarks/arm/insn_count.c"

# ---- 6. a static aarch64 fp16 program: cross toolchain + fp16 check + icount workload
LOOP=$CACHE/bin/fp16_loop
step "aarch64 fp16_loop"
cached_build "$LOOP" "$ROOT/benchmarks/arm/fp16_loop.c" \
    aarch64-linux-gnu-gcc -O2 -static -march=armv8.2-a+fp16 -o "$LOOP.tmp" "$ROOT/benchmarks/arm/fp16_loop.c"

# ---- 7. verify under qemu and write env.json ------------------------------------
step "verify under qemu"
if [ -f "$CACHE/env.json" ] && [ $CHANGED = 0 ] && [ $FORCE_VERIFY = 0 ]; then
    done_step "verified before (env.json; --verify to redo)"
else
    rm -f "$CACHE/env.json"
    PROBE='
import json, platform, sys, time
t0 = time.time()
import numpy, ncnn
t1 = time.time()
import importlib.util
root = sys.argv[1]
spec = importlib.util.spec_from_file_location("litedet", root + "/litedet/__init__.py",
                                              submodule_search_locations=[root + "/litedet", root])
mod = importlib.util.module_from_spec(spec); sys.modules["litedet"] = mod; spec.loader.exec_module(mod)
from litedet.runtime.detector import Detector  # numpy + ncnn only
print(json.dumps({"machine": platform.machine(), "python": platform.python_version(), "numpy": numpy.__version__,
                  "ncnn": ncnn.__version__, "asimdhp": bool(ncnn.cpu_support_arm_asimdhp()),
                  "import_numpy_ncnn_s": round(t1 - t0, 2)}))
'
    run_arm() { env -i PYTHONPATH="$SITE" PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
        "$QEMU" -cpu "$1" -L "$SYSROOT" "$ARM_PY" -s -P -c "$PROBE" "$ROOT"; }
    MAX_JSON=$(run_arm max) || { echo "setup_arm.sh: numpy/ncnn/litedet.runtime do not import under qemu-aarch64" >&2; exit 1; }
    A76_JSON=$(run_arm cortex-a76)
    LOOP_OUT=$("$QEMU" -cpu max "$LOOP" 1000)
    N1=$(mktemp); N2=$(mktemp)
    env -i setarch "$(uname -m)" -R "$QEMU" -cpu cortex-a76 -plugin "$PLUGIN,outfile=$N1" "$LOOP" 1000 >/dev/null
    env -i setarch "$(uname -m)" -R "$QEMU" -cpu cortex-a76 -plugin "$PLUGIN,outfile=$N2" "$LOOP" 1000 >/dev/null
    C1=$(cut -d' ' -f2 "$N1"); C2=$(cut -d' ' -f2 "$N2"); rm -f "$N1" "$N2"
    "$HOSTPY" - "$CACHE" "$QEMU" "$MAX_JSON" "$A76_JSON" "$LOOP_OUT" "$C1" "$C2" <<'EOF'
import json, subprocess, sys
cache, qemu, max_json, a76_json, loop_out, c1, c2 = sys.argv[1:]
mx, a76 = json.loads(max_json), json.loads(a76_json)
errors = []
if mx["machine"] != "aarch64":
    errors.append(f"the emulated python reports machine {mx['machine']!r}, not aarch64")
if not mx["asimdhp"]:
    errors.append("ncnn under qemu-aarch64 -cpu max reports no asimdhp: no fp16 arithmetic")
if not a76["asimdhp"]:
    errors.append("ncnn under qemu-aarch64 -cpu cortex-a76 reports no asimdhp")
if c1 != c2:
    errors.append(f"insn_count gave {c1} then {c2} instructions for the same fp16_loop run")
if errors:
    sys.exit("setup_arm.sh: verification failed:\n  " + "\n  ".join(errors))
env = {
    "format": "litedet-arm-env", "version": 1, "cache": cache, "qemu": qemu,
    "qemu_version": subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout.splitlines()[0],
    "sysroot": cache + "/sysroot", "python": cache + "/sysroot/usr/bin/python3.11", "site": cache + "/site",
    "plugin": cache + "/plugin/libinsn_count.so", "fp16_loop": cache + "/bin/fp16_loop",
    "python_version": mx["python"], "numpy": mx["numpy"], "ncnn": mx["ncnn"],
    "asimdhp": {"max": mx["asimdhp"], "cortex-a76": a76["asimdhp"]},
    "fp16_loop_1000": {"output": loop_out, "insns": int(c1)},
}
with open(cache + "/env.json", "w") as f:
    json.dump(env, f, indent=2)
    f.write("\n")
print(f"python {mx['python']} aarch64, numpy {mx['numpy']}, ncnn {mx['ncnn']}, asimdhp (fp16 arithmetic): "
      f"max={mx['asimdhp']} cortex-a76={a76['asimdhp']}; import numpy+ncnn {mx['import_numpy_ncnn_s']} s; "
      f"fp16_loop 1000: {int(c1)} insns twice", end="")
EOF
    echo " ($(elapsed "$STEP_T0") s)"
fi

echo "ARM environment ready in $CACHE ($(elapsed "$T_START") s)"
