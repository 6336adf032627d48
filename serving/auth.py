"""The bearer token rule every facematch server follows: `Authorization: Bearer TOKEN`, the scheme's case free
(RFC 9110 §11.1: an auth-scheme is case-insensitive), read by FastAPI's own parser; a token compared in constant
time."""
from __future__ import annotations

import hmac

from fastapi.security.utils import get_authorization_scheme_param


def bearer_token(authorization: str | None) -> str:
    """The token an Authorization header carries with the Bearer scheme (any case), else ''."""
    scheme, token = get_authorization_scheme_param(authorization)
    return token if scheme.lower() == "bearer" else ""


def same_secret(given: str, expected: str) -> bool:
    """Whether `given` is the secret `expected`, compared in constant time; an empty one never matches."""
    return bool(given) and bool(expected) and hmac.compare_digest(given.encode(), expected.encode())
