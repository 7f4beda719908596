"""MTA-STS for outbound delivery (RFC 8461): a domain's policy, discovered, fetched and cached.

`MtaStsPolicies.policy(domain)` answers, for one recipient domain:

- a `Policy` in mode `enforce` or `testing`: the policy to apply (below);
- None: no policy to apply (no `_mta-sts` record, or one that is not valid: several, a bad
  one (§3.1); a fetch that failed with nothing cached (§3.3: "MUST continue with delivery as
  though the domain has not implemented MTA-STS"); a policy in mode `none` (§5));
- an `Outcome` (temporary, 4.4.3): the TXT lookup failed temporarily (timeout, SERVFAIL) and no
  unexpired policy is cached. The caller defers every recipient of the domain, as for an MX
  lookup that failed.

What the caller (queue/remote.py) must do with a `Policy` (§4, §5, §5.1):

- `enforce`: only MX hosts for which `policy.allows(mx_host)` may be used; each is connected to
  with STARTTLS required and the certificate verified for the MX host name (the client's
  `starttls="required"`, `tls_verify="verify"`, `tls_name=mx_host`; §4.2). A host that does not
  match, offers no STARTTLS or fails verification is skipped, never tried in clear text or
  unverified. No host left is a temporary failure (4.7.5; §5: "MUST NOT permanently fail ...
  before checking ... for an updated policy", which the next attempt's `policy()` does).
- `testing`: deliver as without a policy, but log one line per MX host that would have failed
  (no match, no TLS, a certificate that does not verify): what TLS-RPT (RFC 8460) will report.
- The policy domain is the recipient domain itself, never its parent (§4: "senders MUST NOT
  attempt to fetch a policy from the parent zone"); through a smart host, the smart host's.

Discovery, fetch and cache (§3.1, §3.3, §5.1), per domain, in memory (`clock`: wall-clock
seconds, injectable):

- Each call asks for `_mta-sts.<domain>` TXT (the DNS cache keeps it for its TTL). A cached
  policy whose id is the record's is used until `max_age` seconds after its fetch, without a
  fetch; a cached policy is refetched once a day (§3.3: "SHOULD proactively refresh cached
  policies before they expire"), keeping the cached one if that fails.
- A new id (or none cached) fetches `https://mta-sts.<domain>/.well-known/mta-sts.txt`: the
  addresses of `mta-sts.<domain>` from the resolver (AAAA then A), TLS verified for that host
  name with the `tls_context` given (SNI too), one HTTP/1.1 GET, the status 200, media type
  `text/plain` (§3.3), a 3xx never followed (§3.3), the body at most 64 KiB and the whole
  fetch within `fetch_timeout` (§3.3's suggestions: 64 KiB, one minute), no HTTP cache.
- A fetch or parse failure is logged (`mta-sts: fetch failed ...`) and, for that domain and
  id, not tried again for five minutes (§3.3: "SHOULD limit further attempts to a period of
  five minutes or longer per version ID"); an unexpired cached policy goes on being used
  (§3.3: "if no 'live' policy can be discovered ... the sender MUST apply that cached
  policy"), even when the TXT record is gone or broken (§3.1, §8.3: a domain removes its
  policy by publishing mode `none`, not by removing the record). Nothing is cached from a
  failed fetch: an untrusted certificate caches nothing.
- Concurrent calls for one domain share one discovery. At most `max_domains` domains are kept
  (least recently fetched out first).

The fetch speaks HTTP/1.1 with `h11` (its framing: Content-Length, chunked, bounded header
size) over asyncio's streams: see docs/architecture.md, "Dependencies".
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import h11

from postkeep import log
from postkeep.dns.names import InvalidName
from postkeep.dns.resolver import DnsResolver
from postkeep.dns.results import Answer, TempFail
from postkeep.queue.mtasts_policy import Mode, Policy, PolicyError, parse_policy, record_id
from postkeep.queue.outcome import Outcome, temporary
from postkeep.queue.routes import host_addresses

logger = log.get("queue")

WELL_KNOWN = "/.well-known/mta-sts.txt"
#: §3.3's suggested bounds of a fetch: 64 KiB of body, one minute.
MAX_BODY = 64 * 1024
FETCH_TIMEOUT = 60.0
#: §3.3: after a failed fetch, no other one for the same domain and id for five minutes.
RETRY_FETCH_AFTER = 300.0
#: §3.3: cached policies are refreshed proactively, "a suggested refresh frequency is once per
#: day".
REFRESH_AFTER = 86400.0
_READ = 16 * 1024


class FetchError(Exception):
    """The policy could not be fetched (the message says why)."""


@dataclass(frozen=True, slots=True)
class _Cached:
    policy: Policy
    fetched: float  # clock() when it was fetched

    def fresh(self, now: float) -> bool:
        return now < self.fetched + self.policy.max_age


class MtaStsPolicies:
    """The MTA-STS policies of recipient domains, for one process (see the module docstring).

    `tls_context` verifies the policy hosts' certificates (production: the system's CAs,
    `ssl.create_default_context()`); it must check host names. `https_port` is 443 but for
    tests."""

    def __init__(self, resolver: DnsResolver, tls_context: ssl.SSLContext, *,
                 clock: Callable[[], float] = time.time, fetch_timeout: float = FETCH_TIMEOUT,
                 https_port: int = 443, max_body: int = MAX_BODY,
                 max_domains: int = 10_000) -> None:
        if tls_context.verify_mode != ssl.CERT_REQUIRED or not tls_context.check_hostname:
            raise ValueError("MTA-STS policy fetches need a context that verifies host names")
        self.resolver = resolver
        self.tls_context = tls_context
        self.clock = clock
        self.fetch_timeout = fetch_timeout
        self.https_port = https_port
        self.max_body = max_body
        self.max_domains = max_domains
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._failed: dict[tuple[str, str], float] = {}  # (domain, id): no fetch before
        self._inflight: dict[str, asyncio.Future[Policy | Outcome | None]] = {}

    async def policy(self, domain: str) -> Policy | Outcome | None:
        """The policy to apply to mail for `domain` (a lower-case A-label), None for none, or a
        temporary `Outcome` when it cannot be known now."""
        task = self._inflight.get(domain)
        if task is None:
            task = asyncio.ensure_future(self._discover(domain))
            self._inflight[domain] = task
            task.add_done_callback(lambda _: self._inflight.pop(domain, None))
        return await asyncio.shield(task)

    def _usable(self, domain: str, now: float) -> _Cached | None:
        cached = self._cache.get(domain)
        if cached is not None and not cached.fresh(now):
            del self._cache[domain]
            return None
        return cached

    async def _discover(self, domain: str) -> Policy | Outcome | None:
        now = self.clock()
        cached = self._usable(domain, now)
        kept = _applied(cached)
        name = f"_mta-sts.{domain}"
        try:
            result = await self.resolver.txt(name)
        except InvalidName:
            return None  # no such domain name: the MX lookup says so
        if isinstance(result, TempFail):
            if cached is not None:
                return kept
            return temporary("4.4.3", f"MTA-STS policy lookup {name} TXT failed: {result.reason}")
        if not isinstance(result, Answer):  # NXDOMAIN, NODATA: no record
            return kept
        try:
            policy_id = record_id(result.records)
        except PolicyError as e:
            logger.info("mta-sts: no policy domain=%s: %s", domain, e)
            return kept
        if policy_id is None:
            return kept
        if (cached is not None and cached.policy.id == policy_id
                and now < cached.fetched + REFRESH_AFTER):
            return kept
        if self._failed.get((domain, policy_id), 0.0) > now:
            return kept
        try:
            policy = parse_policy(await self._fetch(domain), policy_id)
        except (FetchError, PolicyError) as e:
            self._failed_fetch(domain, policy_id, now)
            logger.warning("mta-sts: fetch failed domain=%s id=%s: %s%s", domain, policy_id, e,
                           f" (cached policy id={cached.policy.id} kept)" if cached else "")
            return kept
        fetched = _Cached(policy, self.clock())
        self._store(domain, fetched)
        logger.info("mta-sts: policy domain=%s id=%s mode=%s max_age=%d mx=%s", domain,
                    policy.id, policy.mode, policy.max_age, ",".join(policy.mx_patterns))
        return _applied(fetched)

    def _store(self, domain: str, cached: _Cached) -> None:
        self._cache[domain] = cached
        self._cache.move_to_end(domain)
        while len(self._cache) > self.max_domains:
            self._cache.popitem(last=False)

    def _failed_fetch(self, domain: str, policy_id: str, now: float) -> None:
        self._failed[(domain, policy_id)] = now + RETRY_FETCH_AFTER
        if len(self._failed) > self.max_domains:
            self._failed = {k: until for k, until in self._failed.items() if until > now}

    async def _fetch(self, domain: str) -> bytes:
        """The policy text of `domain` (§3.3), or FetchError."""
        host = f"mta-sts.{domain}"
        addresses = await host_addresses(self.resolver, host)
        if isinstance(addresses, Outcome):
            raise FetchError(addresses.text)
        failures = []
        try:
            async with asyncio.timeout(self.fetch_timeout):
                for address in addresses:
                    try:
                        reader, writer = await asyncio.open_connection(
                            address, self.https_port, ssl=self.tls_context,
                            server_hostname=host)
                    except OSError as e:  # refused, unreachable, TLS (certificate) failures
                        failures.append(f"{address}: {e}")
                        continue
                    try:
                        return await self._get(reader, writer, host)
                    except OSError as e:
                        raise FetchError(f"{address}: {e}") from None
                    finally:
                        writer.close()
        except TimeoutError:
            raise FetchError(f"no policy within {self.fetch_timeout:g} s") from None
        raise FetchError("; ".join(failures))

    async def _get(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   host: str) -> bytes:
        conn = h11.Connection(h11.CLIENT)
        authority = host if self.https_port == 443 else f"{host}:{self.https_port}"
        writer.write(conn.send(h11.Request(method="GET", target=WELL_KNOWN, headers=[
            ("Host", authority), ("User-Agent", "postkeep"), ("Accept", "text/plain"),
            ("Connection", "close")])))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
        body = bytearray()
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(_READ))
                elif isinstance(event, h11.Response):
                    self._check_response(event)
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > self.max_body:
                        raise FetchError(f"policy over {self.max_body} bytes")
                elif isinstance(event, h11.EndOfMessage):
                    return bytes(body)
                elif isinstance(event, h11.ConnectionClosed):
                    raise FetchError("connection closed before the policy")
        except h11.RemoteProtocolError as e:
            raise FetchError(f"bad HTTP response: {e}") from None

    def _check_response(self, response: h11.Response) -> None:
        headers = {name.lower(): value for name, value in response.headers}
        status = response.status_code
        if 300 <= status < 400:
            where = headers.get(b"location", b"").decode("latin-1")
            raise FetchError(f"HTTP {status} redirect to {where!r} not followed (RFC 8461 §3.3)")
        if status != 200:
            raise FetchError(f"HTTP {status} {response.reason.decode('latin-1')}")
        media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if media != b"text/plain":
            raise FetchError(f"media type {media.decode('latin-1')!r} is not text/plain")
        if int(headers.get(b"content-length", b"0")) > self.max_body:  # digits: h11 checks
            raise FetchError(f"policy over {self.max_body} bytes (Content-Length)")


def _applied(cached: _Cached | None) -> Policy | None:
    """The policy to apply: none for mode `none` (§5: "as though it does not have any active
    policy")."""
    if cached is None or cached.policy.mode is Mode.NONE:
        return None
    return cached.policy
