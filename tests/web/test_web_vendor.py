"""The chart and map libraries: pinned in web/frontend's npm lockfile, vendored with their licences,
served by the gateway itself (every asset a page names answers from the gateway, none from a CDN)."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENDOR = ROOT / "src" / "quota_gateway" / "web" / "static" / "vendor"
TEMPLATES = ROOT / "src" / "quota_gateway" / "web" / "templates"
LIBRARIES = {"uplot": ("uPlot", ["uPlot.iife.min.js", "uPlot.min.css"]),
             "jsvectormap": ("jsvectormap", ["jsvectormap.min.js", "jsvectormap.min.css", "jsvectormap-world.js"])}


def test_libraries_are_pinned_and_vendored_with_their_licences():
    lock = json.loads((ROOT / "web" / "frontend" / "package-lock.json").read_text())
    wanted = json.loads((ROOT / "web" / "frontend" / "package.json").read_text())["dependencies"]
    for package, (stem, files) in LIBRARIES.items():
        locked = lock["packages"][f"node_modules/{package}"]
        assert locked["version"] == wanted[package] and locked["integrity"].startswith("sha512-")
        assert locked["license"] == "MIT"
        licence = (VENDOR / f"{stem}.LICENSE.txt").read_text()
        assert "MIT License" in licence and "Permission is hereby granted" in licence
        for name in files:
            assert (VENDOR / name).stat().st_size > 1000, name
    # The vendored uPlot is the locked version (its banner names it).
    banner = (VENDOR / "uPlot.iife.min.js").read_text()[:200]
    assert f"(v{lock['packages']['node_modules/uplot']['version']})" in banner


async def test_every_asset_a_page_names_is_served_by_the_gateway(client):
    named = set()
    for template in TEMPLATES.rglob("*.html"):
        text = template.read_text()
        assert not re.search(r'(?:src|href)="(?:https?:)?//', text), f"{template.name} loads from elsewhere"
        named |= set(re.findall(r'(?:src|href)="(/static/[^"]+)"', text))
    assert {f"/static/web/vendor/{f}" for _, files in LIBRARIES.values() for f in files} <= named
    for path in sorted(named):
        r = await client.get(path)
        assert r.status_code == 200 and len(r.content) > 0, path
