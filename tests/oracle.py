"""Client of the torchvision oracle (tests/oracle_server.py in the venv of
scripts/setup_oracle.sh): ``Oracle().call("ps_roi_align", feat=..., ...)``."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
from pathlib import Path

ORACLE_DIR = Path(os.environ.get("LITEDET_ORACLE", Path.home() / ".cache" / "litedet" / "oracle"))
SERVER = Path(__file__).with_name("oracle_server.py")


class OracleError(RuntimeError):
    pass


class Oracle:
    def __init__(self, python: Path | None = None) -> None:
        python = python or ORACLE_DIR / "bin" / "python"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env["OMP_NUM_THREADS"] = "1"
        self.proc = subprocess.Popen([str(python), str(SERVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)

    def call(self, op: str, **kwargs):
        data = pickle.dumps((op, kwargs))
        self.proc.stdin.write(struct.pack("<I", len(data)) + data)
        self.proc.stdin.flush()
        head = self.proc.stdout.read(4)
        if len(head) < 4:
            raise OracleError(f"the torchvision oracle exited (code {self.proc.wait()})")
        status, value = pickle.loads(self.proc.stdout.read(struct.unpack("<I", head)[0]))
        if status != "ok":
            raise OracleError(f"oracle {op}: {value}")
        return value

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def oracle_available() -> bool:
    return (ORACLE_DIR / ".litedet-oracle-ok").is_file() and (ORACLE_DIR / "bin" / "python").exists()
