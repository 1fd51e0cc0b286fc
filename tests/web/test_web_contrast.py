"""WCAG AA colour contrast (4.5:1 for text) of the stylesheet every page uses: each rule that sets
both a text and a background colour, and the theme's text, muted, link and button colours on the
backgrounds they are drawn on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from quota_gateway.web.service import contrast_with_white

CSS = (Path(__file__).resolve().parents[2] / "src" / "quota_gateway" / "web" / "static" / "app.css").read_text()
_HEX = r"(#[0-9a-fA-F]{6}|#[0-9a-fA-F]{3})\b"


def _long(colour: str) -> str:
    return colour if len(colour) == 7 else "#" + "".join(c * 2 for c in colour[1:])


def contrast(a: str, b: str) -> float:
    """The WCAG ratio of two colours, from each one's ratio against white."""
    la, lb = (1.05 / contrast_with_white(_long(c)) - 0.05 for c in (a, b))
    light, dark = max(la, lb), min(la, lb)
    return (light + 0.05) / (dark + 0.05)


def _rules_with_both() -> list[tuple[str, str, str]]:
    found = []
    for selector, body in re.findall(r"([^{}]+)\{([^}]*)\}", CSS):
        bg = re.search(r"background:\s*" + _HEX, body)
        fg = re.search(r"(?<![-\w])color:\s*" + _HEX, body)
        if bg and fg:
            found.append((selector.strip(), fg.group(1), bg.group(1)))
    return found


def _var(name: str) -> str:
    match = re.search(rf"--{name}:\s*{_HEX}", CSS)
    assert match, name
    return match.group(1)


@pytest.mark.parametrize(("selector", "fg", "bg"), _rules_with_both())
def test_each_rule_with_text_and_background_passes_aa(selector, fg, bg):
    assert contrast(fg, bg) >= 4.5, f"{selector}: {fg} on {bg} is {contrast(fg, bg):.2f}:1"


def test_theme_colours_pass_aa():
    link = re.search(r"(?m)^a \{ color: " + _HEX, CSS).group(1)
    pairs = {"text on page": (_var("text"), _var("bg")), "text on card": (_var("text"), _var("card")),
             "muted on page": (_var("muted"), _var("bg")), "muted on card": (_var("muted"), _var("card")),
             "link on page": (link, _var("bg")), "link on card": (link, _var("card")),
             "white on brand (buttons, header)": ("#ffffff", _var("brand")),
             "white on danger buttons": ("#ffffff", _var("danger"))}
    low = {name: round(contrast(*pair), 2) for name, pair in pairs.items() if contrast(*pair) < 4.5}
    assert not low, low
    assert len(_rules_with_both()) >= 10   # the badges, notes and flashes were found
