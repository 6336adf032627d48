"""Who may use the page and change the store: the hosts it answers (Starlette's TrustedHostMiddleware: a
DNS-rebinding page that calls itself evil.example is refused), the proof a change comes from the page itself
(its Origin or Sec-Fetch-Site header; a program sends Origin or the token), the token the page needs beyond
loopback (web.token, `Authorization: Bearer` or the cookie /login sets), and the headers that keep other sites
from framing it or running script in it."""
from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import Request

from serving import bearer_token, check_beyond_loopback, same_secret
from utils import ConfigError
from webapp.errors import Forbidden

LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1"]
TOKEN_COOKIE = "facematch_token"
# The page has no inline script or style; Swagger UI's page (/docs) has one inline script and draws with data: URLs.
PAGE_POLICY = ("default-src 'self'; img-src 'self' data: blob:; frame-ancestors 'none'; base-uri 'none'; "
               "form-action 'self'; object-src 'none'")
DOCS_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; "
               "base-uri 'none'; object-src 'none'")


def allowed_hosts(host: str, allowed: list[str]) -> list[str]:
    """The Host names the page answers: web.allowed_hosts, or loopback's names (and web.host itself when it is
    a name or an address other than 0.0.0.0)."""
    if allowed:
        return list(allowed)
    names = list(LOOPBACK_NAMES)
    if host not in ("0.0.0.0", "::", *names):
        names.append(host)
    return names


def check_serving(host: str, token: str, allowed: list[str]) -> None:
    """Refuse, at start, to serve beyond loopback without a token (the rule every facematch server follows:
    serving.check_beyond_loopback) or, on every address, without saying which host names to answer."""
    check_beyond_loopback(host, token, host_key="web.host", secret_key="web.token",
                          what="the page (which adds and removes photos)",
                          how="set web.token to a long random secret (programs send it as `Authorization: Bearer "
                              "TOKEN`, people open /login?token=TOKEN once)")
    if host in ("0.0.0.0", "::") and not allowed:
        raise ConfigError(f"web.host={host}: set web.allowed_hosts to the names people reach the page by "
                          "(e.g. [faces.example.org]), so that no other site's name is answered")


def has_token(request: Request, token: str) -> bool:
    """The request carries web.token: as a Bearer header (the scheme in any case, as every facematch server reads
    it: serving.bearer_token), or as the cookie /login set."""
    given = bearer_token(request.headers.get("authorization")) or request.cookies.get(TOKEN_COOKIE, "")
    return same_secret(given, token)


def same_origin(request: Request) -> None:
    """A request that changes something must prove it comes from the page itself: its Origin is the page's, or the
    browser says Sec-Fetch-Site: same-origin, or it carries the token; a request with no proof, or from another
    site, is refused (403). Beyond loopback the token is needed as well."""
    web = request.app.state.web.web
    token = str(web.token or "")
    origin = request.headers.get("origin")
    site = request.headers.get("sec-fetch-site")
    if origin and urlsplit(origin).netloc != request.headers.get("host"):
        raise Forbidden(f"a request from {origin} is not accepted here")
    if site and site not in ("same-origin", "none"):
        raise Forbidden(f"a request from another site (Sec-Fetch-Site: {site}) is not accepted here")
    if token and not has_token(request, token):
        raise Forbidden("this page needs its token: send `Authorization: Bearer TOKEN`, or open /login?token=TOKEN "
                        "once in the browser")
    if not (origin or site or token):
        host = request.headers.get("host", "HOST:PORT")
        raise Forbidden(f"a change needs proof that it comes from this page: the page's own forms send it; a program "
                        f"sends `Origin: http://{host}` (or, with web.token set, `Authorization: Bearer TOKEN`)")


def security_headers(path: str) -> dict[str, str]:
    """The headers every answer carries: no framing by other sites, no type sniffing, a content policy the page
    (or Swagger UI's page) passes, no referrer sent elsewhere."""
    return {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
            "Content-Security-Policy": DOCS_POLICY if path == "/docs" else PAGE_POLICY}
