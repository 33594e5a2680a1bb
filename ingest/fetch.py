"""HTTP fetching that is safe against hostile feeds and polite to publishers.

Every request the crawler makes goes through :class:`Fetcher`, which
- refuses URLs whose host resolves to a private, loopback, link-local or otherwise non-public
  address (SSRF), on every redirect hop, and checks the connected peer again after connecting
  (a DNS answer that changes between check and connect is caught before the body is read);
- follows at most ``max_redirects`` redirects itself, so each hop is checked;
- streams bodies and stops at ``max_bytes`` of *decoded* content (a 50 MB "feed" is never read
  whole; a gzip bomb is inflated only up to the cap) and at an overall
  deadline (a server dripping one byte a second cannot hold a worker forever);
- sends conditional requests (ETag / Last-Modified) so unchanged feeds cost a 304;
- obeys robots.txt for its User-Agent and keeps at most one request in flight per host, spaced by
  the configured delay or the site's Crawl-delay, whichever is longer.
Failures raise :class:`FetchError` with a reason fit for a log line; nothing else escapes.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit
from urllib.robotparser import RobotFileParser

import httpx

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
REDIRECT_CODES = {301, 302, 303, 307, 308}
ROBOTS_TTL_S = 3600.0
ROBOTS_ERROR_TTL_S = 300.0
ROBOTS_MAX_BYTES = 500_000


class FetchError(Exception):
    """A request that yielded nothing usable; ``reason`` says why, ``url`` where."""

    def __init__(self, url: str, reason: str, *, bytes_read: int = 0) -> None:
        super().__init__(f"{reason} ({url})")
        self.url = url
        self.reason = reason
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


def _blocked(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def check_public(url: str, *, allow_private: bool) -> None:
    """Raise FetchError unless every address ``url``'s host resolves to is public (or allowed)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchError(url, f"scheme {parts.scheme or '(none)'!r} not allowed")
    host = parts.hostname
    if not host:
        raise FetchError(url, "URL has no host")
    if allow_private:
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise FetchError(url, "invalid port") from None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise FetchError(url, f"cannot resolve {host}: {err}") from None
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%")[0])
        if _blocked(ip):
            raise FetchError(url, f"{host} resolves to non-public address {ip} (SSRF guard; set allow_private for this feed to permit)")


def _peer_ip(response: httpx.Response) -> str | None:
    stream = response.extensions.get("network_stream")
    if stream is None:
        return None
    try:
        addr = stream.get_extra_info("server_addr")
    except Exception:  # transport without that info: the pre-connect check stands alone
        return None
    return addr[0] if addr else None


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
            raise FetchError(url, f"unsupported Content-Encoding {encoding!r}")
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
            raise FetchError(self.url, f"corrupt compressed body: {err}") from None


class HostThrottle:
    """One request in flight per host, and at least ``delay`` seconds between two of them."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self._locks: dict[str, threading.Lock] = {}
        self._last: dict[str, float] = {}
        self._extra: dict[str, float] = {}
        self._guard = threading.Lock()

    def set_min_delay(self, host: str, seconds: float) -> None:
        """A site's own Crawl-delay (robots.txt), honoured when longer than ours."""
        self._extra[host] = seconds

    @contextmanager
    def slot(self, host: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(host, threading.Lock())
        with lock:
            delay = max(self.delay_s, self._extra.get(host, 0.0))
            wait = self._last.get(host, -1e18) + delay - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                yield
            finally:
                self._last[host] = time.monotonic()


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
        obey_robots: bool = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.user_agent = user_agent
        self.robot_name = user_agent.split("/")[0].strip()
        self.timeout_s = timeout_s
        self.deadline_s = timeout_s * 4
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.obey_robots = obey_robots
        self.throttle = HostThrottle(host_delay_s)
        self._client = httpx.Client(
            follow_redirects=False,
            timeout=httpx.Timeout(timeout_s),
            headers={"User-Agent": user_agent, "Accept-Encoding": "gzip, deflate"},
            transport=transport,
            trust_env=False,
        )
        self._robots: dict[str, tuple[float, RobotFileParser | None]] = {}
        self._robots_lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    # --- public ---------------------------------------------------------------------------
    def fetch(
        self,
        url: str,
        *,
        allow_private: bool = False,
        etag: str | None = None,
        last_modified: str | None = None,
        accept: str = "*/*",
    ) -> FetchResult:
        """GET ``url`` following checked redirects; raise FetchError with a reason on any failure."""
        headers = {"Accept": accept}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        seen: list[str] = []
        current = url
        for _ in range(self.max_redirects + 1):
            if current in seen:
                raise FetchError(url, f"redirect loop via {current}")
            seen.append(current)
            check_public(current, allow_private=allow_private)
            if self.obey_robots and not self._robots_allow(current, allow_private):
                raise FetchError(current, "disallowed by robots.txt")
            result = self._get(current, headers, allow_private)
            if result.status in REDIRECT_CODES:
                location = result.headers.get("location")
                if not location:
                    raise FetchError(current, f"HTTP {result.status} redirect without Location")
                current = urljoin(current, location)
                continue
            return result
        raise FetchError(url, f"more than {self.max_redirects} redirects")

    # --- internals ------------------------------------------------------------------------
    def _get(self, url: str, headers: dict[str, str], allow_private: bool, max_bytes: int | None = None) -> FetchResult:
        cap = max_bytes or self.max_bytes
        host = urlsplit(url).hostname or ""
        read = 0
        with self.throttle.slot(host):
            started = time.monotonic()
            try:
                with self._client.stream("GET", url, headers=headers) as resp:
                    peer = _peer_ip(resp)
                    if peer and not allow_private and _blocked(ipaddress.ip_address(peer.split("%")[0])):
                        raise FetchError(url, f"connected to non-public address {peer} (SSRF guard)")
                    if resp.status_code in REDIRECT_CODES or resp.status_code == 304:
                        return FetchResult(url, resp.status_code, resp.headers, b"", 0)
                    if resp.status_code >= 400:
                        raise FetchError(url, f"HTTP {resp.status_code}")
                    declared = resp.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > cap:
                        raise FetchError(url, f"body of {int(declared)} bytes exceeds the {cap}-byte cap")
                    decoder = _Decoder(url, resp.headers.get("content-encoding", ""))
                    chunks: list[bytes] = []
                    for raw in resp.iter_raw(CHUNK_BYTES):
                        for chunk in decoder.feed(raw, cap - read + 1):
                            read += len(chunk)
                            chunks.append(chunk)
                        if read > cap:
                            raise FetchError(url, f"body exceeds the {cap}-byte cap (stopped after {read} bytes)", bytes_read=read)
                        if time.monotonic() - started > self.deadline_s:
                            raise FetchError(url, f"download took over {self.deadline_s:.0f}s", bytes_read=read)
                    return FetchResult(str(url), resp.status_code, resp.headers, b"".join(chunks), read)
            except httpx.TimeoutException as err:
                raise FetchError(url, f"timed out ({type(err).__name__})", bytes_read=read) from None
            except httpx.HTTPError as err:
                raise FetchError(url, f"{type(err).__name__}: {err}", bytes_read=read) from None

    def _robots_allow(self, url: str, allow_private: bool) -> bool:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        now = time.monotonic()
        with self._robots_lock:
            cached = self._robots.get(origin)
        if cached is None or cached[0] < now:
            parser, ttl = self._load_robots(origin, allow_private)
            with self._robots_lock:
                self._robots[origin] = (now + ttl, parser)
            cached = self._robots[origin]
        parser = cached[1]
        if parser is None:  # robots.txt unreachable: assume disallowed for a while (RFC 9309)
            return False
        delay = parser.crawl_delay(self.robot_name)
        if delay:
            self.throttle.set_min_delay(parts.hostname or "", float(delay))
        return parser.can_fetch(self.robot_name, url)

    def _load_robots(self, origin: str, allow_private: bool) -> tuple[RobotFileParser | None, float]:
        parser = RobotFileParser(origin + "/robots.txt")
        url = origin + "/robots.txt"
        try:
            check_public(url, allow_private=allow_private)
            result = self._get(url, {"Accept": "text/plain"}, allow_private, max_bytes=ROBOTS_MAX_BYTES)
        except FetchError as err:
            if err.reason.startswith("HTTP 4"):
                parser.parse([])  # no robots.txt: everything allowed
                return parser, ROBOTS_TTL_S
            log.warning("robots.txt of %s unavailable (%s); not crawling it for %.0fs", origin, err.reason, ROBOTS_ERROR_TTL_S)
            return None, ROBOTS_ERROR_TTL_S
        if result.status in REDIRECT_CODES:
            parser.parse([])  # a redirected robots.txt is rare; treat as absent rather than chase it
        else:
            parser.parse(result.body.decode("utf-8", "replace").splitlines())
        return parser, ROBOTS_TTL_S
