"""`quota-gateway serve` end to end: embedded servers, bootstrap, TLS, clean shutdown, no orphans."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from quota_gateway.embedded import free_port

pytestmark = pytest.mark.slow


def _descendants(pid: int) -> set[int]:
    """Every live process whose ancestry includes `pid` (read from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        children = {p for p, parent in parents.items() if parent in frontier} - found
        found |= children
        frontier = children
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start_serve(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, int, list[str]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QG_")}
    env.update(QG_DATA_DIR=str(tmp_path / "data"), QG_PORT=str(port))
    proc = subprocess.Popen([sys.executable, "-m", "quota_gateway.cli", "serve", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "admin access token" in line:  # the last line of a first start's banner
            break
    return proc, port, lines


def _wait_healthy(url: str, **kwargs) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1, **kwargs).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} never became healthy")


def _stop(proc: subprocess.Popen) -> set[int]:
    children = _descendants(proc.pid)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in children):
        time.sleep(0.1)
    return {p for p in children if _alive(p)}


def _send_head(port: int, head: bytes) -> tuple[int, dict]:
    """Send a raw request head; the answer's status and JSON body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with contextlib.suppress(OSError):  # the server may stop reading once it has answered
            sock.sendall(head)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    status_line, _, rest = raw.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.split(b"\r\n\r\n", 1)[1])


def test_serve_bootstraps_embedded_servers_and_stops_cleanly(tmp_path):
    proc, port, lines = _start_serve(tmp_path)
    try:
        output = "".join(lines)
        token = re.search(r"admin access token \(shown once\): (exo_at_\S+)", output)
        assert token, output
        _wait_healthy(f"http://127.0.0.1:{port}/healthz")
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/readyz").json()["status"] == "ready"
        r = httpx.get(f"{base}/api/tenant", headers={"Authorization": f"ExisOneApi {token.group(1)}"})
        assert r.status_code == 200 and r.json()["slug"] == "default"
        assert len(_descendants(proc.pid)) >= 2  # redis + postgres at least
        # serve runs the bounded protocol (abuse/headers.py): a 1 MB header is refused before the app
        status, body = _send_head(port, b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 1_000_000
                                  + b"\r\n\r\n")
        assert status == 431 and body["error"] == "headers_too_large", (status, body)
        assert httpx.get(f"{base}/healthz").status_code == 200

        # The CLI finds the running gateway's embedded servers through the data dir.
        cli = [sys.executable, "-m", "quota_gateway.cli", "token"]
        env = {**os.environ, "QG_DATA_DIR": str(tmp_path / "data")}
        made = subprocess.run([*cli, "create", "--tenant", "default", "--scopes", "verify"], env=env,
                              capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        public_id, new_token = made.stdout.split()[:2]
        headers = {"Authorization": f"ExisOneApi {new_token}"}
        assert httpx.get(f"{base}/api/tenant", headers=headers).status_code == 200
        revoked = subprocess.run([*cli, "revoke", "--tenant", "default", public_id], env=env,
                                 capture_output=True, text=True, timeout=60)
        assert revoked.returncode == 0, revoked.stderr
        deadline = time.monotonic() + 2
        while httpx.get(f"{base}/api/tenant", headers=headers).status_code != 401:
            assert time.monotonic() < deadline, "CLI revocation not seen by the gateway within 2 s"
            time.sleep(0.05)
    finally:
        leftovers = _stop(proc)
    assert proc.returncode in (0, 130, -signal.SIGINT), proc.returncode
    assert not leftovers, f"orphan processes left behind: {leftovers}"


def test_serve_dev_tls(tmp_path):
    proc, port, lines = _start_serve(tmp_path, "--dev-tls")
    try:
        assert f"https://127.0.0.1:{port}" in "".join(lines)
        cert = tmp_path / "data" / "tls" / "dev-cert.pem"
        context = ssl.create_default_context(cafile=str(cert))
        _wait_healthy(f"https://127.0.0.1:{port}/healthz", verify=context)
        with pytest.raises(httpx.HTTPError):  # plain http is not served on the TLS port
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        assert not _stop(proc)
