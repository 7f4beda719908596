"""A small browser for the web tests: real HTTPS (the instance's own certificate as the only
trust anchor) or HTTP over `http.client`, from a chosen loopback source address, with the
cookies it was given kept as a browser keeps them (by name; a Max-Age=0 or expired one
removed), and the form fields of the last page at hand (`field`)."""

from __future__ import annotations

import html
import http.client
import re
import ssl
import urllib.parse
from dataclasses import dataclass, field
from http.cookies import SimpleCookie

from tests.interop.conftest import Instance


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: str

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def cookies(self) -> list[str]:
        return self.headers.get_all("Set-Cookie") or []

    def field(self, name: str, action: str | None = None) -> str:
        """The value of the (first) input `name` of the page, in the form posting to `action`
        if given."""
        text = self.body
        if action is not None:
            start = text.index(f'action="{action}"')
            text = text[start:text.index("</form>", start)]
        m = re.search(rf'name="{re.escape(name)}" value="([^"]*)"', text)
        assert m is not None, f"no {name} in the page"
        return html.unescape(m[1])


@dataclass
class Browser:
    inst: Instance
    source: str = "127.0.0.1"
    host: str = "localhost"
    agent: str = "postkeep-tests/1"
    jar: dict[str, str] = field(default_factory=dict)

    def _connection(self, tls: bool) -> http.client.HTTPConnection:
        if tls:
            ctx = ssl.create_default_context(cafile=str(self.inst.ca_file))
            ctx.check_hostname = False  # the certificate names "localhost"; we dial 127.0.0.1
            return http.client.HTTPSConnection("127.0.0.1", self.inst.https_port, timeout=20,
                                               context=ctx, source_address=(self.source, 0))
        return http.client.HTTPConnection("127.0.0.1", self.inst.http_port, timeout=20,
                                          source_address=(self.source, 0))

    def request(self, method: str, path: str, form: dict[str, str] | None = None, *,
                headers: dict[str, str] | None = None, tls: bool = True,
                host: str | None = None, body: bytes | None = None) -> Reply:
        port = self.inst.https_port if tls else self.inst.http_port
        sent = {"Host": f"{host or self.host}:{port}", "User-Agent": self.agent}
        if self.jar:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        sent.update(headers or {})
        conn = self._connection(tls)
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            reply = Reply(response.status, response.headers,
                          response.read().decode("utf-8", "replace"))
        finally:
            conn.close()
        for line in reply.cookies():
            for name, morsel in SimpleCookie(line).items():
                if morsel["max-age"] == "0" or morsel.value == "":
                    self.jar.pop(name, None)
                else:
                    self.jar[name] = morsel.value
        return reply

    def get(self, path: str, **kw: object) -> Reply:
        return self.request("GET", path, **kw)  # type: ignore[arg-type]

    def post(self, path: str, form: dict[str, str], **kw: object) -> Reply:
        return self.request("POST", path, form, **kw)  # type: ignore[arg-type]

    def login(self, address: str, password: str) -> Reply:
        page = self.get("/login")
        return self.post("/login", {"csrf": page.field("csrf"), "address": address,
                                    "password": password})

    def account(self) -> Reply:
        page = self.get("/account")
        assert page.status == 200, (page.status, page.header("Location"))
        return page
