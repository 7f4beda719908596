"""A message's HTML made safe to show: sanitised by ammonia (nh3), framed under its own CSP.

Defence in layers, each enough against script on its own:

1. `clean` keeps an allow-list of tags and attributes (ammonia's defaults: no ``<script>``,
   ``<style>``, ``<iframe>``, ``<object>``, ``<form>``, no ``on*`` handler, no ``srcset``)
   plus ``style`` attributes; URLs only with the http, https, mailto and cid schemes (so no
   ``javascript:`` or ``data:`` link); every link opens a new top-level browsing context
   (``target="_blank"``, ``rel="noopener noreferrer"``). An image's ``cid:`` source (RFC
   2392) becomes a ``data:`` URL of the message's own inline part (`Inline`); a remote
   (http/https) image source is dropped unless the user asked for remote images.
2. The page is served by its own route with `frame_csp`: ``default-src 'none'`` (no script,
   no fetch, no font, no frame), inline style only, images ``data:`` only (``https:`` too
   when remote images were asked for), ``sandbox`` (scripts, forms and same-origin access
   off even if the URL is opened on its own), ``frame-ancestors 'self'``.
3. The reading page frames it in ``<iframe sandbox="allow-popups
   allow-popups-to-escape-sandbox">``: an opaque origin with no script, whose links may
   open in a new tab.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import nh3

URL_SCHEMES: Final = frozenset({"http", "https", "mailto", "cid"})
ATTRIBUTES: Final[dict[str, set[str]]] = {
    **{tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()},
    "*": {"style", "title", "align", "dir", "lang"},
    "img": {"src", "alt", "width", "height", "title", "align"},
    "table": {"width", "border", "cellpadding", "cellspacing", "align", "bgcolor"},
    "td": {"width", "height", "colspan", "rowspan", "align", "valign", "bgcolor"},
    "th": {"width", "height", "colspan", "rowspan", "align", "valign", "bgcolor"},
    "font": {"color", "face", "size"},
}
TAGS: Final = frozenset(nh3.ALLOWED_TAGS | {"font"})
FRAME_SANDBOX: Final = "allow-popups allow-popups-to-escape-sandbox"


@dataclass(frozen=True, slots=True)
class Inline:
    """An inline image part of the message: its Content-ID (without <>), type, octets."""

    content_id: str
    content_type: str
    data: bytes

    def data_url(self) -> str:
        return f"data:{self.content_type};base64,{base64.b64encode(self.data).decode()}"


def frame_csp(images: bool) -> str:
    """The Content-Security-Policy of a message's HTML frame (see the module docstring)."""
    img = "data: https:" if images else "data:"
    return (f"default-src 'none'; style-src 'unsafe-inline'; img-src {img}; "
            f"frame-ancestors 'self'; base-uri 'none'; form-action 'none'; "
            f"sandbox {FRAME_SANDBOX}")


def clean(html: str, inline: Mapping[str, Inline], images: bool) -> tuple[str, int]:
    """`html` sanitised (module docstring, 1.), and how many remote images were dropped."""
    dropped = 0

    def attribute(tag: str, name: str, value: str) -> str | None:
        nonlocal dropped
        if tag != "img" or name != "src":
            return value
        if value[:4].lower() == "cid:":
            found = inline.get(value[4:].strip().strip("<>"))
            return found.data_url() if found is not None else None
        if images and value[:6].lower() == "https:":
            return value
        dropped += 1
        return None

    text = nh3.clean(
        html, tags=set(TAGS), attributes=ATTRIBUTES, url_schemes=set(URL_SCHEMES),
        attribute_filter=attribute, link_rel="noopener noreferrer",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        clean_content_tags={"script", "style", "title", "noscript", "template"},
    )
    return text, dropped


def frame_document(body: str, notice: str = "") -> str:
    """The frame's whole document around a sanitised body (and a note of what was cut)."""
    note = f'<p style="color:#5b6474;font:13px sans-serif">{notice}</p>' if notice else ""
    return ("<!doctype html><html><head><meta charset=\"utf-8\">"
            "<meta name=\"referrer\" content=\"no-referrer\"></head>"
            f"<body style=\"margin:8px;font:15px/1.45 sans-serif\">{note}{body}</body></html>")
