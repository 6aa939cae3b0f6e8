"""`litedet bench --ssh` against a real sshd (Debian's openssh-server) started here on
127.0.0.1 with throw-away host and user keys. The "board" is this machine's loopback
account whose python is the aarch64 runtime under qemu-aarch64 (numpy + ncnn wheels for
aarch64, fp16 arithmetic): the runner zip, the bundle and the photo really travel over ssh.
Loopback only, bounded runs (one fp16 inference per model)."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import converted, unavailable
from litedet.benchmarks import remote
from litedet.benchmarks.schema import load_results
from litedet.cli import main

pytestmark = pytest.mark.arm  # the board's python runs under qemu-aarch64


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    sshd_bin = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd_bin).is_file() or shutil.which("ssh") is None:
        unavailable("openssh-server (sshd) missing (scripts/setup_bench.sh installs it)")
    d = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "user_key", "other_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
    port = _free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        f"PermitRootLogin prohibit-password\nPidFile {d / 'sshd.pid'}\nMaxStartups 50\n")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
    proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(d / "sshd_config")], stderr=open(d / "log", "w"))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None:
            pytest.fail(f"sshd exited: {(d / 'log').read_text()[-500:]}")
        time.sleep(0.1)
    yield {"port": port, "dir": d, "user": getpass.getuser()}
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def board(arm_env, sshd):
    """Remote pythons for the loopback board: the aarch64 runtime under qemu, one without
    numpy/ncnn, and one whose connection drops after the first measurement."""
    env = arm_env
    d = sshd["dir"]
    run = (f'{env.qemu} -cpu cortex-a76 -L {env.sysroot} {env.python} -s "$@"')
    (d / "board-python").write_text(
        "#!/bin/sh\n# the board: aarch64 python 3.11 with the aarch64 numpy and ncnn wheels\n"
        f"exec env PYTHONPATH={env.site} PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1 OMP_NUM_THREADS=1 {run}\n")
    (d / "bare-python").write_text("#!/bin/sh\n# a board python without numpy and ncnn\n"
                                   f"exec env -u PYTHONPATH PYTHONDONTWRITEBYTECODE=1 {run}\n")
    # after the first record, kill this session's sshd processes (never the listener, whose pid
    # is in the PidFile): the connection drops as when a board goes away mid-run
    (d / "dying-python").write_text(
        "#!/bin/bash\n"
        f'{d / "board-python"} "$@" | {{ IFS= read -r line; printf "%s\\n" "$line"; '
        f'listener=$(cat {d / "sshd.pid"}); p=$PPID; kill=""; '
        'while [ -n "$p" ] && [ "$p" -gt 1 ] && [ "$p" != "$listener" ]; do '
        'case "$(ps -o comm= -p "$p")" in sshd*) kill="$kill $p";; esac; '
        'p=$(ps -o ppid= -p "$p" | tr -d " "); done; kill -9 $kill; sleep 5; }\n')
    for n in ("board-python", "bare-python", "dying-python"):
        (d / n).chmod(0o755)
    return d


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    return converted(tmp_path_factory, "shufflenet_v2_x0_5", "ssh", input_size=96)


def _args(sshd, *extra, key="user_key", port=None, python=None):
    d = sshd["dir"]
    a = ["bench", "--ssh", f"{sshd['user']}@127.0.0.1", "--port", str(port or sshd["port"]),
         "--identity", str(d / key), "--ssh-option", f"UserKnownHostsFile={d / 'known_hosts'}",
         "--ssh-option", "StrictHostKeyChecking=accept-new", "--runs", "1", "--warmup", "0", "--precisions", "fp16",
         "--quiet"]
    if python:
        a += ["--remote-python", str(python)]
    return a + list(extra)


def test_ssh_bench_on_the_loopback_board(sshd, board, tiny_bundle, tmp_path):
    out = tmp_path / "o"
    assert main(_args(sshd, str(tiny_bundle), "--out", str(out), python=board / "board-python")) == 0
    res = load_results(out)
    assert res.place == "ssh" and not res.partial and len(res.records) == 1
    r = res.records[0]
    assert (r.model, r.place, r.runtime, r.precision, r.threads) == ("shufflenet_v2_x0_5", "ssh", "ncnn", "fp16", 1)
    assert r.device.startswith("aarch64") and r.input == [3, 96, 96]
    assert r.latency_ms["runs"] == 1 and r.stages_ms["inference"]["median"] > 0
    assert r.macs and r.params and r.bin_bytes  # counted on the host, on the same bundle
    dev = res.machine["device"]
    assert dev["machine"] == "aarch64" and dev["ncnn_cpu_support"].get("arm_asimdhp") is True
    assert dev["peak_rss_bytes"] > 1e6
    assert "| shufflenet_v2_x0_5 | ssh |" in (out / "results.md").read_text()


def test_ssh_board_without_numpy_and_ncnn_says_so(sshd, board, tiny_bundle, tmp_path, capsys):
    assert main(_args(sshd, str(tiny_bundle), "--out", str(tmp_path / "o"), python=board / "bare-python")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot import numpy" in err[0] and "ncnn" in err[0] and "--remote-python" in err[0]


def test_ssh_missing_remote_python(sshd, board, tiny_bundle, tmp_path, capsys):
    assert main(_args(sshd, str(tiny_bundle), "--out", str(tmp_path / "o"), python="/nonexistent/python3")) == 2
    assert "the board has no '/nonexistent/python3': pass --remote-python PATH" in capsys.readouterr().err


def test_ssh_refused_and_auth_failure(sshd, tiny_bundle, tmp_path, capsys):
    assert main(_args(sshd, str(tiny_bundle), "--out", str(tmp_path / "o"), port=_free_port())) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refused: is sshd running there, and on that --port?" in err[0]
    assert main(_args(sshd, str(tiny_bundle), "--out", str(tmp_path / "o"), key="other_key")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "authentication failed" in err[0] and "--identity KEY" in err[0]
    assert not (tmp_path / "o" / "results.json").exists()


def test_ssh_connection_lost_mid_run_keeps_what_was_measured(sshd, board, tiny_bundle, tmp_path, capsys):
    out = tmp_path / "o"
    rc = main(_args(sshd, str(tiny_bundle), str(tiny_bundle), "--out", str(out), python=board / "dying-python"))
    assert rc == 1
    assert "PARTIAL results" in capsys.readouterr().err
    res = load_results(out)
    assert res.partial and len(res.records) == 1 and "connection" in res.errors[0]


@pytest.mark.parametrize("stderr, want", [
    ("ssh: connect to host 10.0.0.9 port 22: No route to host", "is unreachable"),
    ("ssh: connect to host board port 22: Connection timed out", "is unreachable"),
    ("ssh: Could not resolve hostname board.local: Name or service not known", "is unreachable"),
    ("Connection to 127.0.0.1 closed by remote host.", "was lost"),
    ("Host key verification failed.", "not the known one"),
])
def test_ssh_error_words(stderr, want):
    # ssh's own messages for failures that need a network beyond loopback to provoke
    assert want in remote.classify_ssh_error(stderr, "u@board", 22)


def test_ssh_target_must_be_user_at_host(tiny_bundle, tmp_path, capsys):
    assert main(["bench", str(tiny_bundle), "--ssh", "board", "--out", str(tmp_path / "o")]) == 2
    assert "expected USER@HOST" in capsys.readouterr().err
