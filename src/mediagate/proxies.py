"""The proxy a URL goes through: HTTP_PROXY, HTTPS_PROXY and NO_PROXY (either case;
on macOS and Windows, the system's settings too), as Python's `urllib` reads them and
botocore does for its clients (`get_environ_proxies`).

Looked up once per origin, for what aiohttp sends: the client's calls, the server's
relayed parts and probe reads. aiohttp's `trust_env` would look them up in a thread
at every request, and would add a `~/.netrc` password beside a token.
"""

from __future__ import annotations

import urllib.request
from urllib.parse import urlsplit


class EnvironmentProxies:
    def __init__(self) -> None:
        self._by_origin: dict[tuple[str, str], str | None] = {}

    def for_url(self, url: str) -> str | None:
        parts = urlsplit(url)
        origin = (parts.scheme, parts.netloc)
        if origin not in self._by_origin:
            self._by_origin[origin] = _chosen(parts.scheme, parts.hostname or "")
        return self._by_origin[origin]


def _chosen(scheme: str, host: str) -> str | None:
    proxy = urllib.request.getproxies().get(scheme)
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"
