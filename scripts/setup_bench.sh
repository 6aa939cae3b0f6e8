#!/usr/bin/env bash
# What `litedet bench` and its tests need beyond the Python packages:
#  - Debian's adb client (adb) and OpenSSH's server (openssh-server: the tests start a
#    throw-away sshd on 127.0.0.1 as the "board"), installed with apt-get when missing;
#  - the ncnn C++ library for x86_64 and aarch64 (scripts/setup_ncnn_lib.sh, cached), which
#    litedet_cpp, the app's C++ pipeline, links against.
#
#   bash scripts/setup_bench.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
need=()
command -v adb >/dev/null || need+=(adb)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v cmake >/dev/null || need+=(cmake)
if [ ${#need[@]} -gt 0 ]; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || { echo "setup_bench.sh: need root to install ${need[*]}: run 'apt-get install -y ${need[*]}' as root" >&2; exit 1; }
        SUDO=sudo
    fi
    log=$(mktemp)
    if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >"$log" 2>&1; then
        $SUDO apt-get update >>"$log" 2>&1
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >>"$log" 2>&1 \
            || { echo "setup_bench.sh: apt-get install ${need[*]} failed; see $log" >&2; tail -5 "$log" >&2; exit 1; }
    fi
    rm -f "$log"
    echo "installed ${need[*]}"
fi
bash "$ROOT/scripts/setup_ncnn_lib.sh" all
