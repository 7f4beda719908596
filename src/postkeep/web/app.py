"""The aiohttp applications of the web listeners and what every request goes through.

HTTPS (`make_app`), in this order for each request:

1. the Host must be one of `Config.web_hostnames` (else 421 Misdirected Request, RFC 9110
   §15.5.20): no page is served for a name an attacker's DNS points here. The public routes
   (`Public`: client autoconfiguration, `postkeep.web.autoconfig`) are also served on the
   hosts their `host` check admits (a local domain's ``autoconfig.`` host ...), and go
   straight to their handler: no session, no CSRF token (they change nothing), their body
   (any type, at most `Public.max_body`: 413 past it) in ``request["body"]``;
2. the body (forms only, at most `web.max_body_size`: 413 past it; other types 415) is read,
   and with it the request's deadline is met (`postkeep.web.server`). The `uploads` paths
   (the webmail's compose forms) may be up to `web.max_compose_size` and keep the files of a
   multipart/form-data body (RFC 7578), read into memory (`files_of`), never to a file;
   elsewhere only a form's text fields are kept;
3. the session: the ``__Host-pk-session`` cookie's token, looked up by its hash; an expired or
   idle one is gone (`web.session_lifetime`, `web.session_idle`);
4. a state change (any method but GET/HEAD) from another site is refused 403 (Sec-Fetch-Site,
   Origin), and one without the right CSRF token too (`postkeep.web.security`), each logged
   ``reject ip=... code=403 reason=...``;
5. the page (`postkeep.web.pages`), which finds the account only through the session;
6. every response, errors included, gets the security headers, and the pages
   ``Cache-Control: no-store``.

HTTP (`make_redirect_app`): every request is answered 308 to the same path and query on
HTTPS, for a Host among the configured names or one the public routes admit; any other Host
is answered 421 and names nothing (no open redirect).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

from aiohttp import BodyPartReader, web

from postkeep import log
from postkeep.config import Config, parse_listen
from postkeep.store.api import Store, WebSession
from postkeep.web.security import (
    LOGIN_CSRF_COOKIE,
    MAX_TOKEN,
    SECURITY_HEADERS,
    SESSION_COOKIE,
    cross_site,
    csrf_token,
    host_allowed,
    split_host,
    token_hash,
    tokens_match,
)
from postkeep.web.server import connection_of

logger = log.get("web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TOUCH_EVERY = 60.0  # seconds between writes of a session's last-seen time
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# the forms that may have no session yet (the login, the passwordless passkey login): their
# CSRF token is the login cookie's
LOGIN_PATHS = ("/login", "/login/passkey", "/login/passkey/options")
MAX_FORM_PARTS = 256  # fields and files of one multipart form
READ_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Upload:
    """A file of a multipart/form-data form (RFC 7578 §4.2): its field, the file name the
    browser sent (may be empty), its declared type and its content."""

    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Public:
    """Routes any client may use without a session (read only), the check of the Host names
    outside `Config.web_hostnames` they are served on too, and their largest body."""

    routes: list[web.RouteDef]
    host: Callable[[str | None], Awaitable[bool]]
    max_body: int


@dataclass(frozen=True, slots=True)
class Current:
    """The session of a request and its token (the cookie's value)."""

    session: WebSession
    token: str

    @property
    def csrf(self) -> str:
        return csrf_token(self.token)


def client_ip(request: web.BaseRequest) -> str:
    """The admitted client's address (the PROXY header's, behind a proxy)."""
    conn = connection_of(request)
    if conn is not None and conn.peer is not None:
        return conn.peer.ip
    return request.remote or "-"


def current(request: web.Request) -> Current | None:
    found = request.get("current")
    return found if isinstance(found, Current) else None


def form_of(request: web.Request) -> dict[str, str]:
    """The request's form fields (read and checked by the middleware; text fields only; of a
    name given more than once, the last value)."""
    found = request.get("form")
    return found if isinstance(found, dict) else {}


def form_values(request: web.Request, name: str) -> list[str]:
    """Every value of the text field `name`, in the order posted (``uid=1&uid=2``)."""
    found = request.get("form_pairs")
    return [v for k, v in found if k == name] if isinstance(found, list) else []


def files_of(request: web.Request) -> list[Upload]:
    """The files of the request's form (an `uploads` path's; none elsewhere)."""
    found = request.get("files")
    return found if isinstance(found, list) else []


def _refuse(request: web.Request, status: int, reason: str) -> web.Response:
    logger.warning("reject ip=%s code=%d reason=%s path=%s", client_ip(request), status,
                   log.quote(reason), log.quote(request.path[:200]))
    return web.Response(status=status, text=f"{reason}\n")


def _secure_headers(_request: web.BaseRequest, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers["Server"] = "postkeep"  # not aiohttp's name and version
    if response.content_type in ("text/html", "text/plain"):
        response.headers.setdefault("Cache-Control", "no-store")


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    _secure_headers(request, response)


def make_app(cfg: Config, store: Store, routes: list[web.RouteDef],
             public: Public | None = None,
             uploads: Collection[str] = ()) -> web.Application:
    """The HTTPS application: the middleware of the module docstring, then `routes` and
    the `public` ones; `uploads`: the paths whose forms carry files."""
    names = cfg.web_hostnames()
    idle, max_body = cfg.web.session_idle, cfg.web.max_body_size
    max_upload = max(max_body, cfg.web.max_compose_size) if uploads else max_body
    open_handlers = {route.handler for route in public.routes} if public else set()

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        is_public = public is not None and request.match_info.handler in open_handlers
        if host_allowed(request.headers.get("Host"), names) is None and not (
                is_public and public is not None
                and await public.host(request.headers.get("Host"))):
            return _refuse(request, 421, "unknown host")
        conn = connection_of(request)
        if conn is not None:
            conn.in_request = True
        try:
            if is_public and public is not None:
                problem = await _read_body(request, public.max_body)
                if problem is not None:
                    return problem
                if conn is not None:
                    conn.request_read()
                return await handler(request)
            if request.method not in ("GET", "HEAD"):
                upload = request.path in uploads
                problem = await _read_form(request, max_upload if upload else max_body, upload)
                if problem is not None:
                    return problem
            if conn is not None:
                conn.request_read()
            await _load_session(request, store, idle)
            if request.method not in ("GET", "HEAD"):
                origin = "https://" + request.headers.get("Host", "").strip().lower()
                reason = cross_site(request.method, request.headers, origin)
                if reason is None and not _csrf_ok(request):
                    reason = "missing or wrong CSRF token"
                if reason is not None:
                    return _refuse(request, 403, reason)
            return await handler(request)
        finally:
            if conn is not None:  # answered, however: its deadline is over
                conn.request_read()
                conn.in_request = False

    app = web.Application(middlewares=[guard], client_max_size=max_upload)
    app.on_response_prepare.append(_on_prepare)
    app.add_routes(routes)
    if public is not None:
        app.add_routes(public.routes)
    return app


async def _read_body(request: web.Request, limit: int) -> web.Response | None:
    """Read a public route's body (any type) into request["body"]; 413 past `limit`."""
    if request.content_length is not None and request.content_length > limit:
        return _refuse(request, 413, "request body too large")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _refuse(request, 413, "request body too large")
    if len(body) > limit:
        return _refuse(request, 413, "request body too large")
    request["body"] = body
    return None


async def _read_form(request: web.Request, limit: int, upload: bool) -> web.Response | None:
    """Read a state change's form into request["form"] (and an `upload`'s files into
    request["files"]); a refusal if it is not one, or past `limit` octets."""
    if request.content_length is not None and request.content_length > limit:
        return _refuse(request, 413, "request body too large")
    if request.can_read_body and request.content_type not in FORM_TYPES:
        return _refuse(request, 415, "not a form")
    if request.can_read_body and request.content_type == "multipart/form-data":
        return await _read_multipart(request, limit, upload)
    try:
        posted = await request.clone(client_max_size=limit).post()
    except web.HTTPRequestEntityTooLarge:
        return _refuse(request, 413, "request body too large")
    except ValueError:
        return _refuse(request, 400, "malformed form")
    pairs = [(k, v) for k, v in posted.items() if isinstance(v, str)]
    request["form"], request["form_pairs"] = dict(pairs), pairs
    return None


async def _read_multipart(request: web.Request, limit: int,
                          upload: bool) -> web.Response | None:
    """A multipart/form-data body (RFC 7578), read a chunk at a time up to `limit` octets in
    all: text fields (UTF-8) into request["form"], files into request["files"] if `upload`
    (elsewhere they are read past and dropped)."""
    form: dict[str, str] = {}
    pairs: list[tuple[str, str]] = []
    files: list[Upload] = []
    total = 0
    try:
        reader = await request.multipart()
        for _ in range(MAX_FORM_PARTS + 1):
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader) or not part.name:
                return _refuse(request, 400, "malformed form")
            body = bytearray()
            while chunk := await part.read_chunk(READ_CHUNK):
                total += len(chunk)
                if total > limit:
                    return _refuse(request, 413, "request body too large")
                body += chunk
            if part.filename is not None:
                if upload:
                    files.append(Upload(part.name, part.filename,
                                        part.headers.get("Content-Type", ""), bytes(body)))
            else:
                pairs.append((part.name, body.decode("utf-8")))
                form[part.name] = pairs[-1][1]
        else:
            return _refuse(request, 400, "too many form fields")
    except (ValueError, UnicodeDecodeError, AssertionError):
        return _refuse(request, 400, "malformed form")
    request["form"], request["form_pairs"] = form, pairs
    request["files"] = files
    return None


async def _load_session(request: web.Request, store: Store, idle: float) -> None:
    token = request.cookies.get(SESSION_COOKIE, "")
    if not token or len(token) > MAX_TOKEN:
        return
    now = time.time()
    session = await store.get_web_session(token_hash(token), now, now - idle)
    if session is None:
        return
    if now - session.last_seen >= TOUCH_EVERY:
        await store.touch_web_session(session.id, now)
    request["current"] = Current(session, token)


def _csrf_ok(request: web.Request) -> bool:
    given = form_of(request).get("csrf")
    found = current(request)
    if found is not None and tokens_match(found.csrf, given):
        return True
    if request.path in LOGIN_PATHS:  # the login form's: the double-submit cookie's
        return tokens_match(request.cookies.get(LOGIN_CSRF_COOKIE, ""), given)
    return False


def https_port(cfg: Config) -> int:
    """The port HTTP's redirects name (`web.https_port`, or the first `web.listen`'s)."""
    if cfg.web.https_port:
        return cfg.web.https_port
    return parse_listen(cfg.web.listen[0])[1]


def make_redirect_app(cfg: Config, public: Public | None = None) -> web.Application:
    """The HTTP application: 308 to HTTPS for a known host (a configured name, or one
    `public` admits), 421 for any other."""
    names = cfg.web_hostnames()
    port = https_port(cfg)
    suffix = "" if port == 443 else f":{port}"

    async def redirect(request: web.Request) -> web.StreamResponse:
        conn = connection_of(request)
        if conn is not None:  # no body is read: the request is in
            conn.request_read()
        raw = request.headers.get("Host")
        host = host_allowed(raw, names)
        if host is None and public is not None and await public.host(raw):
            parts = split_host(raw or "")
            host = parts[0] if parts is not None else None
        if host is None:
            return _refuse(request, 421, "unknown host")
        target = request.rel_url.raw_path_qs
        if not target.startswith("/"):
            target = "/"
        raise web.HTTPPermanentRedirect(f"https://{host}{suffix}{target}")

    app = web.Application(client_max_size=1024)
    app.on_response_prepare.append(_on_prepare)
    app.router.add_route("*", "/{tail:.*}", redirect)
    return app
