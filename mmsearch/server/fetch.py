"""Fetching a URL a stranger gave (clip-retrieval's ``image_url``) without becoming their proxy.

Only with ``--allow-url-fetch``. Every hop (the first request and each redirect) is resolved first and
refused when any address it resolves to is loopback, private, link-local, multicast or reserved, unless
private addresses are allowed too; the connection then goes to the checked address itself, so a DNS
answer that changes between the check and the connect (rebinding) cannot reach another host. Size and
total time are capped, so a server that drips bytes holds one worker thread for at most ``timeout``.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

MAX_REDIRECTS = 5
MAX_BYTES = 20 * 1024 * 1024
TIMEOUT_S = 10.0


class FetchError(Exception):
    """The URL cannot or may not be fetched. ``status``: the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def public_only(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """The default policy: only globally routable unicast addresses."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def any_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """``--allow-private-urls``: loopback and private networks too (a trusted LAN)."""
    return not ip.is_multicast and not ip.is_unspecified


@dataclass
class _Target:
    scheme: str
    host: str
    port: int
    path: str
    address: str


def _resolve(url: str, allowed: Callable[..., bool]) -> _Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchError("image_url must be an http(s) URL")
    if not parts.hostname:
        raise FetchError("image_url has no host")
    if parts.username or parts.password:
        raise FetchError("image_url must not carry a user name or password")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as e:
        raise FetchError(f"image_url has a bad port: {e}") from e
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise FetchError(f"cannot resolve {parts.hostname}: {e}") from e
    addresses = sorted({str(info[4][0]) for info in infos})
    for a in addresses:
        if not allowed(ipaddress.ip_address(a.split("%", 1)[0])):
            raise FetchError(
                f"image_url {parts.hostname} resolves to {a}, a loopback, private or reserved address: refused "
                "(start the server with --allow-private-urls to allow it)",
                403,
            )
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return _Target(parts.scheme, parts.hostname, port, path, addresses[0])


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, target: _Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = target.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, target: _Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout, context=ssl.create_default_context())
        self._address = target.address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def fetch(
    url: str,
    *,
    allowed: Callable[..., bool] = public_only,
    limit: int = MAX_BYTES,
    timeout: float | None = None,
) -> bytes:
    """The body of ``url`` (following up to MAX_REDIRECTS redirects, each checked).

    Raises:
        FetchError: not http(s), a refused address, too large, too slow, or the server failed.
    """
    timeout = TIMEOUT_S if timeout is None else timeout
    deadline = time.monotonic() + timeout
    for _ in range(MAX_REDIRECTS + 1):
        target = _resolve(url, allowed)
        left = deadline - time.monotonic()
        if left <= 0:
            raise FetchError(f"image_url took longer than {timeout:g} s", 504)
        conn_cls = _PinnedHTTPS if target.scheme == "https" else _PinnedHTTP
        conn = conn_cls(target, timeout=min(left, timeout))
        try:
            conn.request("GET", target.path, headers={"User-Agent": "mmsearch", "Accept": "image/*"})
            resp = conn.getresponse()
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.getheader("Location")
                if not location:
                    raise FetchError("image_url redirected nowhere")
                url = urljoin(url, location)
                continue
            if resp.status != 200:
                raise FetchError(f"image_url answered HTTP {resp.status}")
            length = resp.getheader("Content-Length")
            if length and length.isdigit() and int(length) > limit:
                raise FetchError("image_url content too large", 413)
            body = bytearray()
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise FetchError(f"image_url took longer than {timeout:g} s", 504)
                if conn.sock is not None:
                    conn.sock.settimeout(left)  # a server dripping a byte at a time meets the deadline too
                chunk = resp.read1(64 * 1024)
                if not chunk:
                    return bytes(body)
                body += chunk
                if len(body) > limit:
                    raise FetchError("image_url content too large", 413)
        except (OSError, http.client.HTTPException) as e:
            if isinstance(e, TimeoutError) or "timed out" in str(e):
                raise FetchError(f"image_url took longer than {timeout:g} s", 504) from e
            raise FetchError(f"cannot fetch image_url: {e}") from e
        finally:
            conn.close()
    raise FetchError(f"image_url redirected more than {MAX_REDIRECTS} times")
