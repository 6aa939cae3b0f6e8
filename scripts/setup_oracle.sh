#!/usr/bin/env bash
# The torchvision oracle: a separate venv whose torchvision ops (ps_roi_align, nms,
# batched_nms, BoxCoder, AnchorGenerator, the RPN's and RoIHeads' filtering) are the
# reference the two-stage tests compare litedet's numpy runtime and C++ core with.
#
#   bash scripts/setup_oracle.sh [DIR]
#
# Why a second venv: litedet pins torch==2.13.0 (the CPU build on this disk), and
# PyPI's torchvision 0.28.0 does not import beside it (its ops library links the
# CUDA build of torch: "operator torchvision::nms does not exist"). torch 2.14.1 and
# torchvision 0.29.1 do pair, and pip on Python 3.11 takes both from this disk; the
# oracle only ever runs on the CPU, in a child process (tests/oracle_server.py).
# DIR defaults to $LITEDET_ORACLE, else ~/.cache/litedet/oracle; a venv that already
# passes the check is kept (delete DIR to rebuild).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${1:-${LITEDET_ORACLE:-$HOME/.cache/litedet/oracle}}
TORCH=torch==2.14.1
TORCHVISION=torchvision==0.29.1
NUMPY=$(grep -o '"numpy==[0-9.]*"' "$ROOT/pyproject.toml" | tr -d '"')
check() {
    "$DIR/bin/python" - <<'PY'
import torch, torchvision
from torchvision.ops import ps_roi_align, nms
x = torch.arange(2 * 49 * 9, dtype=torch.float32).reshape(1, 98, 3, 3)
out = ps_roi_align(x, torch.tensor([[0.0, 0.0, 0.0, 2.0, 2.0]]), (7, 7), 1.0, 2)
assert out.shape == (1, 2, 7, 7)
assert nms(torch.tensor([[0.0, 0, 1, 1], [0, 0, 1, 1.0]]), torch.tensor([1.0, 0.5]), 0.5).tolist() == [0]
print(f"oracle: torch {torch.__version__}, torchvision {torchvision.__version__}")
PY
}
if [ -x "$DIR/bin/python" ] && [ -f "$DIR/.litedet-oracle-ok" ] && check; then
    exit 0
fi
T0=$(date +%s)
rm -rf "$DIR.tmp"
python3 -m venv "$DIR.tmp"
"$DIR.tmp/bin/pip" install -q --disable-pip-version-check "$TORCH" "$TORCHVISION" "$NUMPY" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
# a venv's scripts name their interpreter by path: build in DIR.tmp, then move and re-point
rm -rf "$DIR"
mv "$DIR.tmp" "$DIR"
sed -i "s|$DIR.tmp|$DIR|g" "$DIR"/bin/* 2>/dev/null || true
check
touch "$DIR/.litedet-oracle-ok"
echo "oracle venv ready in $DIR ($(( $(date +%s) - T0 )) s, $(du -sh "$DIR" | cut -f1))"
