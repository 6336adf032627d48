"""What the page refuses, as typed errors that carry their HTTP status; the app's exception handlers
turn each into the page with its message (or JSON), never a traceback."""
from __future__ import annotations

from utils import FacematchError


class UserError(FacematchError, ValueError):
    """A request the page refuses, with the message shown to the user and an HTTP status."""
    status = 400

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status


class Forbidden(UserError):
    status = 403


class NotFound(UserError):
    status = 404


class TooLarge(UserError):
    status = 413


class Unsupported(UserError):
    status = 415


class NoFace(UserError):
    status = 422


class Busy(UserError):
    """Too much work waiting: come back in a moment (503, with Retry-After)."""
    status = 503


class ServerFailure(UserError):
    """Anything unexpected while serving a request: said on the page as a failure, its details in the log."""
    status = 500


class BodyTooLarge(Exception):
    """A request body past the limit (raised while it is being read); its argument: whether the route takes photos."""
