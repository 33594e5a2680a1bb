"""HTTP fetching that is safe against hostile feeds and polite to publishers.

Every request the crawler makes goes through :class:`Fetcher`, which
- refuses URLs that cannot be parsed (a bad port, a control character) with a reason;
- refuses hosts that resolve to a private, loopback, link-local or otherwise non-public address
  (SSRF), on every redirect hop. The address is resolved and checked *before* connecting, and the
  connection goes to that checked address (:class:`GuardedBackend`); Host and TLS SNI keep the
  name. A DNS answer that changes between check and connect (rebinding) cannot get a byte out;
- follows at most ``max_redirects`` redirects itself, so each hop is checked;
- streams bodies and stops at ``max_bytes`` of *decoded* content (a 50 MB "feed" is never read
  whole; a gzip bomb is inflated only up to the cap);
- holds every download to a wall-clock deadline: each socket read, write and connect gets only the
  time left, so a server dripping one byte a second is cut off at the deadline, not after 64 KiB;
- sends conditional requests (ETag / Last-Modified) so unchanged feeds cost a 304;
- obeys robots.txt for its User-Agent as RFC 9309 reads it (protego: ``*`` and ``$`` wildcards,
  the longest matching rule wins, ``Allow`` over ``Disallow`` on a tie); the standard library's
  parser knows no wildcards and takes the first match, so it let ``/a?session=1`` through a
  ``Disallow: /*?session=`` and refused ``/news/x`` under ``Allow: /news/`` after ``Disallow: /``;
- keeps at most one request in flight per site, spaced by the configured delay or the site's
  Crawl-delay (capped), whichever is longer, and after a 429 or 503 waits the site's
  ``Retry-After`` (seconds or an HTTP date, capped like Crawl-delay) before its next request.
  A caller with a deadline (a feed's poll budget) is refused at once when the wait would pass it
  (kind ``politeness``), never put to sleep beyond it.
Failures raise :class:`FetchError` with a reason fit for a log line (credentials redacted) and a
``kind`` for metrics; nothing else escapes.
"""

from __future__ import annotations

import ipaddress
import math
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx
from protego import Protego

from newspulse.redact import get_logger, redact

log = get_logger(__name__)
# httpx logs every request at INFO with the raw URL, credentials included; we log a redacted one.
get_logger("httpx").setLevel("WARNING")

CHUNK_BYTES = 64 * 1024
REDIRECT_CODES = {301, 302, 303, 307, 308}
BACK_OFF_CODES = {429, 503}  # the codes whose Retry-After the fetcher honours (RFC 9110 §10.2.3, RFC 6585)
ROBOTS_TTL_S = 3600.0
ROBOTS_ERROR_TTL_S = 300.0
ROBOTS_MAX_BYTES = 500_000

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]
AddressPolicy = Callable[[IPAddress], bool]  # True: the address must not be reached


class FetchError(Exception):
    """A request that yielded nothing usable; ``reason`` says why, ``url`` where (both redacted).

    ``kind`` groups reasons for metrics: invalid_url, ssrf, dns, robots, http, timeout, budget
    (the caller's deadline ended the download), politeness (waiting for the site's turn would pass
    the deadline),
    too_large, redirect, encoding, network.
    """

    def __init__(self, url: str, reason: str, *, kind: str = "network", bytes_read: int = 0) -> None:
        self.url = redact(url)
        self.reason = redact(reason)
        super().__init__(f"{self.reason} ({self.url})")
        self.kind = kind
        self.bytes_read = bytes_read


@dataclass
class FetchResult:
    url: str  # after redirects
    status: int
    headers: httpx.Headers
    body: bytes
    bytes_read: int

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait: delay-seconds or an HTTP date; None if absent
    or unreadable (a garbled header must not stall a site forever, nor crash a poll)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def is_blocked(ip: IPAddress) -> bool:
    """The default address policy: anything not globally routable (IPv4-mapped forms included)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def system_resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the OS resolver); raises OSError/UnicodeError."""
    return list(dict.fromkeys(info[4][0].split("%")[0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)))


def resolve_checked(url: str, host: str, port: int, *, allow_private: bool, resolve: Resolver = system_resolve, blocked: AddressPolicy = is_blocked) -> list[str]:
    """The addresses of ``host``, refused (FetchError) if any one of them is blocked."""
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError) as err:
        raise FetchError(url, f"cannot resolve {host}: {err}", kind="dns") from None
    if not addresses:
        raise FetchError(url, f"cannot resolve {host}: no address", kind="dns")
    if not allow_private:
        for address in addresses:
            if blocked(ipaddress.ip_address(address)):
                raise FetchError(url, f"{host} resolves to non-public address {address} (SSRF guard; set allow_private for this feed to permit)", kind="ssrf")
    return addresses


def parse_url(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of an http(s) URL; FetchError(kind=invalid_url) when unusable."""
    try:
        parts = urlsplit(url)
        port = parts.port
        httpx.URL(url)
    except (ValueError, httpx.InvalidURL) as err:
        raise FetchError(url, f"invalid URL: {err}", kind="invalid_url") from None
    if parts.scheme not in ("http", "https"):
        raise FetchError(url, f"scheme {parts.scheme or '(none)'!r} not allowed", kind="invalid_url")
    host = parts.hostname
    if not host:
        raise FetchError(url, "URL has no host", kind="invalid_url")
    if not url.isprintable():  # a space in a path is fine (it is percent-encoded), a tab or DEL is not
        raise FetchError(url, "invalid URL: control character", kind="invalid_url")
    if any(c.isspace() for c in host):
        raise FetchError(url, "invalid URL: whitespace in the host name", kind="invalid_url")
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)


def check_public(url: str, *, allow_private: bool, resolve: Resolver = system_resolve, blocked: AddressPolicy = is_blocked) -> None:
    """Raise FetchError unless ``url`` parses and its host resolves only to public addresses (or allowed)."""
    _, host, port = parse_url(url)
    if not allow_private:
        resolve_checked(url, host, port, allow_private=False, resolve=resolve, blocked=blocked)


# --- the wall-clock deadline and the pinned connection ------------------------------------------

_deadline = threading.local()  # .at: monotonic time the current thread's download must end by


@contextmanager
def download_deadline(at: float) -> Iterator[None]:
    """Every socket operation of this thread gets only the time left until ``at``."""
    previous = getattr(_deadline, "at", None)
    _deadline.at = at
    try:
        yield
    finally:
        _deadline.at = previous


def _time_left(timeout: float | None, error: type[Exception]) -> float | None:
    at = getattr(_deadline, "at", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise error("download deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose reads, writes and TLS handshake end at the thread's deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _time_left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _time_left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context, server_hostname: str | None = None, timeout: float | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, _time_left(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str):
        return self._inner.get_extra_info(info)


class GuardedBackend(httpcore.NetworkBackend):
    """Resolves the host itself, refuses blocked addresses, and connects to the address it checked.

    httpcore hands us the URL's host name; TLS SNI and the Host header still use that name, only
    the TCP connection goes to the pinned address, so there is no second DNS lookup to rebind.
    """

    def __init__(self, *, allow_private: bool, resolve: Resolver, blocked: AddressPolicy) -> None:
        self.allow_private = allow_private
        self.resolve = resolve
        self.blocked = blocked
        self._plain = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None, socket_options: Iterable | None = None) -> httpcore.NetworkStream:
        addresses = resolve_checked(f"{host}:{port}", host, port, allow_private=self.allow_private, resolve=self.resolve, blocked=self.blocked)
        last: Exception | None = None
        for address in addresses:
            try:
                stream = self._plain.connect_tcp(address, port, _time_left(timeout, httpcore.ConnectTimeout), local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as err:
                last = err
                continue
            return _DeadlineStream(stream)
        assert last is not None
        raise last

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Iterable | None = None) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not crawled")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def guarded_transport(*, allow_private: bool, resolve: Resolver = system_resolve, blocked: AddressPolicy = is_blocked) -> httpx.HTTPTransport:
    """An httpx transport whose connections go through :class:`GuardedBackend`."""
    transport = httpx.HTTPTransport(trust_env=False)
    # HTTPTransport takes no network backend; its pool is rebuilt with ours and the same defaults.
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False),
        max_connections=100,
        max_keepalive_connections=20,
        keepalive_expiry=5.0,
        network_backend=GuardedBackend(allow_private=allow_private, resolve=resolve, blocked=blocked),
    )
    return transport


class _Decoder:
    """Content-Encoding decoding that never inflates more than asked (a gzip bomb stays small)."""

    def __init__(self, url: str, encoding: str) -> None:
        encoding = encoding.strip().lower()
        if encoding in ("", "identity"):
            self._z = None
        elif encoding in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._z = zlib.decompressobj()
        else:
            raise FetchError(url, f"unsupported Content-Encoding {encoding!r}", kind="encoding")
        self.url = url

    def feed(self, data: bytes, limit: int) -> Iterator[bytes]:
        """Decoded bytes of ``data``, stopping once ``limit`` bytes have been produced."""
        if self._z is None:
            yield data
            return
        try:
            out = self._z.decompress(data, limit)
            yield out
            limit -= len(out)
            while self._z.unconsumed_tail and limit > 0:
                out = self._z.decompress(self._z.unconsumed_tail, limit)
                yield out
                limit -= len(out)
        except zlib.error as err:
            raise FetchError(self.url, f"corrupt compressed body: {err}", kind="encoding") from None


class HostThrottle:
    """One request in flight per site, and at least ``delay`` seconds between two of them.

    Sites are origins (scheme, host, port), the scope robots.txt and its Crawl-delay apply to.
    A site that answered 429/503 with Retry-After is not asked again before that moment
    (:meth:`back_off`). A caller passes the moment it must be done by; when the lock or the delay
    would keep it past that, it gets a FetchError(kind=politeness) at once instead of a sleep.
    """

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self._locks: dict[str, threading.Lock] = {}
        self._last: dict[str, float] = {}
        self._extra: dict[str, float] = {}
        self._not_before: dict[str, float] = {}
        self._guard = threading.Lock()

    def set_min_delay(self, site: str, seconds: float) -> None:
        """A site's own Crawl-delay (robots.txt, already capped), honoured when longer than ours."""
        self._extra[site] = seconds

    def back_off(self, site: str, seconds: float) -> None:
        """No request to ``site`` for ``seconds`` from now (its Retry-After, already capped)."""
        with self._guard:
            self._not_before[site] = max(self._not_before.get(site, -math.inf), time.monotonic() + seconds)

    @contextmanager
    def slot(self, site: str, deadline: float | None = None) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(site, threading.Lock())
        wait_lock = -1 if deadline is None else max(0.0, deadline - time.monotonic())
        if not lock.acquire(timeout=wait_lock):
            raise FetchError(site, f"poll budget spent waiting for another request to {site}", kind="politeness")
        try:
            delay = max(self.delay_s, self._extra.get(site, 0.0))
            spaced = self._last.get(site, -math.inf) + delay
            not_before = self._not_before.get(site, -math.inf)
            wait = max(spaced, not_before) - time.monotonic()
            if wait > 0:
                if deadline is not None and time.monotonic() + wait > deadline:
                    why = f"the site's Retry-After ({wait:.0f}s left)" if not_before > spaced else f"the site's request delay ({delay:.0f}s)"
                    raise FetchError(site, f"waiting {wait:.0f}s for {why} would pass the poll budget", kind="politeness")
                time.sleep(wait)
            try:
                yield
            finally:
                self._last[site] = time.monotonic()
        finally:
            lock.release()


class Fetcher:
    """Thread-safe fetching with the guards described in the module docstring."""

    def __init__(
        self,
        *,
        user_agent: str,
        timeout_s: float = 15.0,
        max_bytes: int = 5_000_000,
        max_redirects: int = 5,
        host_delay_s: float = 1.0,
        max_crawl_delay_s: float = 60.0,
        obey_robots: bool = True,
        transport: httpx.BaseTransport | None = None,
        resolve: Resolver = system_resolve,
        blocked: AddressPolicy = is_blocked,
    ) -> None:
        """``transport`` replaces the guarded network transports (tests); ``resolve`` and
        ``blocked`` replace the DNS resolver and the address policy of the SSRF guard."""
        self.user_agent = user_agent
        self.robot_name = user_agent.split("/")[0].strip()
        self.timeout_s = timeout_s
        self.deadline_s = timeout_s * 4
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.max_crawl_delay_s = max_crawl_delay_s
        self.obey_robots = obey_robots
        self.resolve = resolve
        self.blocked = blocked
        self.throttle = HostThrottle(host_delay_s)
        self._clients = {
            allow: httpx.Client(
                follow_redirects=False,
                timeout=httpx.Timeout(timeout_s),
                headers={"User-Agent": user_agent, "Accept-Encoding": "gzip, deflate"},
                transport=transport or guarded_transport(allow_private=allow, resolve=resolve, blocked=blocked),
                trust_env=False,
            )
            for allow in (False, True)
        }
        self._robots: dict[str, tuple[float, Protego | None]] = {}
        self._robots_lock = threading.Lock()

    def close(self) -> None:
        for client in self._clients.values():
            client.close()

    # --- public ---------------------------------------------------------------------------
    def fetch(
        self,
        url: str,
        *,
        allow_private: bool = False,
        etag: str | None = None,
        last_modified: str | None = None,
        accept: str = "*/*",
        deadline: float | None = None,
    ) -> FetchResult:
        """GET ``url`` following checked redirects; raise FetchError with a reason on any failure.

        ``deadline`` (monotonic): when the caller's budget ends; waits and downloads stop there.
        """
        headers = {"Accept": accept}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        seen: list[str] = []
        current = url
        for _ in range(self.max_redirects + 1):
            if current in seen:
                raise FetchError(url, f"redirect loop via {current}", kind="redirect")
            seen.append(current)
            check_public(current, allow_private=allow_private, resolve=self.resolve, blocked=self.blocked)
            if self.obey_robots and not self._robots_allow(current, allow_private, deadline):
                raise FetchError(current, "disallowed by robots.txt", kind="robots")
            result = self._get(current, headers, allow_private, deadline=deadline)
            if result.status in REDIRECT_CODES:
                location = result.headers.get("location")
                if not location:
                    raise FetchError(current, f"HTTP {result.status} redirect without Location", kind="redirect")
                current = urljoin(current, location)
                continue
            return result
        raise FetchError(url, f"more than {self.max_redirects} redirects", kind="redirect")

    # --- internals ------------------------------------------------------------------------
    def _get(self, url: str, headers: dict[str, str], allow_private: bool, max_bytes: int | None = None, deadline: float | None = None) -> FetchResult:
        cap = max_bytes or self.max_bytes
        scheme, host, port = parse_url(url)
        site = f"{scheme}://{host}:{port}"
        read = 0
        with self.throttle.slot(site, deadline):
            own_deadline = time.monotonic() + self.deadline_s
            ends = own_deadline if deadline is None else min(own_deadline, deadline)
            try:
                with download_deadline(ends), self._clients[allow_private].stream("GET", url, headers=headers) as resp:
                    log.info("GET %s: HTTP %d", url, resp.status_code)
                    if resp.status_code in REDIRECT_CODES or resp.status_code == 304:
                        return FetchResult(url, resp.status_code, resp.headers, b"", 0)
                    if resp.status_code in BACK_OFF_CODES:
                        raise FetchError(url, f"HTTP {resp.status_code}{self._back_off(site, resp.headers.get('retry-after'))}", kind="http")
                    if resp.status_code >= 400:
                        raise FetchError(url, f"HTTP {resp.status_code}", kind="http")
                    declared = resp.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > cap:
                        raise FetchError(url, f"body of {int(declared)} bytes exceeds the {cap}-byte cap", kind="too_large")
                    decoder = _Decoder(url, resp.headers.get("content-encoding", ""))
                    chunks: list[bytes] = []
                    for raw in resp.iter_raw(CHUNK_BYTES):
                        for chunk in decoder.feed(raw, cap - read + 1):
                            read += len(chunk)
                            chunks.append(chunk)
                        if read > cap:
                            raise FetchError(url, f"body exceeds the {cap}-byte cap (stopped after {read} bytes)", kind="too_large", bytes_read=read)
                    return FetchResult(str(url), resp.status_code, resp.headers, b"".join(chunks), read)
            except httpx.TimeoutException as err:
                if time.monotonic() < ends:
                    raise FetchError(url, f"timed out ({type(err).__name__})", kind="timeout", bytes_read=read) from None
                if ends < own_deadline:
                    raise FetchError(url, f"poll budget ended during the download (after {read} bytes)", kind="budget", bytes_read=read) from None
                raise FetchError(url, f"download took over {self.deadline_s:.0f}s (deadline; {read} bytes read)", kind="timeout", bytes_read=read) from None
            except httpx.HTTPError as err:
                raise FetchError(url, f"{type(err).__name__}: {err}", bytes_read=read) from None

    def _back_off(self, site: str, retry_after: str | None) -> str:
        """Hold ``site``'s next request for its Retry-After (capped like Crawl-delay); the note for the error."""
        seconds = retry_after_seconds(retry_after)
        if seconds is None:
            return ""
        if seconds > self.max_crawl_delay_s:
            log.warning("%s asks to retry after %gs; capped at %gs", site, seconds, self.max_crawl_delay_s)
            seconds = self.max_crawl_delay_s
        self.throttle.back_off(site, seconds)
        return f", retry after {seconds:.0f}s"

    def _robots_allow(self, url: str, allow_private: bool, deadline: float | None) -> bool:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"  # robots.txt is fetched without credentials
        now = time.monotonic()
        with self._robots_lock:
            cached = self._robots.get(origin)
        if cached is None or cached[0] < now:
            parser, ttl = self._load_robots(origin, allow_private, deadline)
            with self._robots_lock:
                self._robots[origin] = (now + ttl, parser)
            cached = self._robots[origin]
        parser = cached[1]
        if parser is None:  # robots.txt unreachable: assume disallowed for a while (RFC 9309)
            return False
        return parser.can_fetch(url, self.robot_name)

    def _load_robots(self, origin: str, allow_private: bool, deadline: float | None) -> tuple[Protego | None, float]:
        url = origin + "/robots.txt"
        try:
            result = self._get(url, {"Accept": "text/plain"}, allow_private, max_bytes=ROBOTS_MAX_BYTES, deadline=deadline)
        except FetchError as err:
            if err.reason.startswith("HTTP 4") and not err.reason.startswith("HTTP 429"):
                return Protego.parse(""), ROBOTS_TTL_S  # no robots.txt: everything allowed (a 429 is a busy site, not an absent file)
            if err.kind in ("budget", "politeness", "ssrf"):  # our budget, or a refused address: say so, cache nothing
                raise
            log.warning("robots.txt of %s unavailable (%s); not crawling it for %.0fs", origin, err.reason, ROBOTS_ERROR_TTL_S)
            return None, ROBOTS_ERROR_TTL_S
        # A redirected robots.txt is rare; it is treated as absent rather than chased.
        parser = Protego.parse("" if result.status in REDIRECT_CODES else result.body.decode("utf-8", "replace"))
        self._apply_crawl_delay(origin, parser)
        return parser, ROBOTS_TTL_S

    def _apply_crawl_delay(self, origin: str, parser: Protego) -> None:
        try:
            delay = float(parser.crawl_delay(self.robot_name) or 0)
        except (TypeError, ValueError):
            delay = 0.0
        if delay > self.max_crawl_delay_s:
            log.warning("robots.txt of %s asks for Crawl-delay %gs; capped at %gs", origin, delay, self.max_crawl_delay_s)
            delay = self.max_crawl_delay_s
        parts = urlsplit(origin)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self.throttle.set_min_delay(f"{parts.scheme}://{parts.hostname}:{port}", max(delay, 0.0))
