"""The Node.js SDK (clients/node) against a real gateway: `npm ci`, `npm run build`, `npm test`.

The gateway runs as `quota-gateway serve --dev-tls` on real Redis and PostgreSQL; Node trusts
its self-signed certificate through NODE_EXTRA_CA_CERTS. An offline code issued here is
verified by the published Python SDK and handed to the Node tests, which verify it too.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
import requests
from exisone import ExisOneClient, ExisOneClientOptions

from conftest import make_tenant

NODE_DIR = Path(__file__).resolve().parents[2] / "clients" / "node"

pytestmark = pytest.mark.slow


def _npm(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["npm", *args], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=timeout)


def _require_node() -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are required (the Makefile installs them: `make test`)")
    major = int(subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip().lstrip("v")
                .split(".")[0])
    assert major >= 18, "the SDK needs Node.js 18+ (global fetch)"


async def test_node_sdk_against_the_gateway(tls_gateway, settings):
    _require_node()
    tenant = await make_tenant(settings.database_url, "nodesdk")
    admin = httpx.Client(base_url=tls_gateway.url, headers=tenant.headers,
                         verify=ssl.create_default_context(cafile=tls_gateway.ca_file))
    product = admin.post("/api/product", json={"name": "SharedOffline"}).json()
    admin.post(f"/api/product/{product['id']}/features", json={"name": "Export"})
    key = admin.post("/api/licenses", json={"productId": product["id"], "validityDays": 30}).json()["activationKey"]
    hardware_id = "C0FFEE" * 10 + "BEEF"
    code = admin.post("/api/license/offline-code", json={"activationKey": key, "hardwareId": hardware_id}).json()[
        "offlineCode"]
    public_pem = admin.get("/api/crypto/keys/public").text
    admin.close()

    # the published Python SDK verifies the code ...
    session = requests.Session()
    session.trust_env = False
    session.verify = tls_gateway.ca_file
    python_sdk = ExisOneClient(ExisOneClientOptions(base_url=tls_gateway.url, access_token=tenant.token,
                                                    offline_public_key=public_pem), session=session)
    verified = python_sdk.validate_offline(code, hardware_id)
    assert verified.is_valid and verified.product_name == "SharedOffline" and verified.features == ["Export"]

    # ... and so must the Node SDK (with everything else its tests cover)
    for step in (("ci", "--no-audit", "--no-fund", "--prefer-offline"), ("run", "build")):
        done = _npm(*step)
        assert done.returncode == 0, f"npm {' '.join(step)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    env = {**os.environ, "NODE_EXTRA_CA_CERTS": tls_gateway.ca_file, "EXISONE_TEST_BASEURL": tls_gateway.url,
           "EXISONE_TEST_TOKEN": tenant.token, "EXISONE_TEST_ORG": tenant.id,
           "EXISONE_TEST_OFFLINE_CODE": code, "EXISONE_TEST_OFFLINE_HWID": hardware_id,
           "EXISONE_TEST_OFFLINE_PRODUCT": "SharedOffline"}
    env.pop("EXISONE_BASEURL", None)
    done = _npm("test", env=env)
    report = done.stdout + done.stderr
    assert done.returncode == 0, f"npm test failed:\n{report[-8000:]}"
    summary = {line.split()[1]: int(line.split()[2]) for line in report.splitlines()
               if line.startswith("# ") and len(line.split()) == 3 and line.split()[2].isdigit()}
    assert summary.get("fail") == 0 and summary.get("pass", 0) >= 9, report[-3000:]
    # only a not-yet-landed support-ticket endpoint may skip
    assert summary.get("skipped", 0) <= 1, report[-3000:]
