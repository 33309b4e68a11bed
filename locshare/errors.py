"""Every error locshare raises on purpose, and what each edge turns it into.

::

    LocshareError                       base; never shown to users as a stack trace
    ├── ConfigError                     bad setting at start-up (message names the setting)
    ├── StorageError                    the database refused something unexpectedly
    │   └── StorageUnavailable          database unreachable      -> 503 unavailable
    │       └── EmbeddedDatabaseLost    the embedded PostgreSQL died and could not be
    │                                   restarted: the server shuts down, exit status 1
    ├── BusUnavailable                  Redis unreachable at start-up (cluster mode)
    ├── ApiError                        carries ``code`` and ``http_status``
    │   ├── MalformedJson               400 malformed_json
    │   ├── InvalidRequest              422 invalid_request (names the field)
    │   ├── Unauthorized                401 unauthorized         (WebSocket: 401 / close 4401)
    │   ├── Forbidden                   403 forbidden
    │   ├── NotFound                    404 not_found
    │   ├── SessionFull                 409 session_full
    │   ├── TooManyPlaces               409 too_many_places (a 21st place)
    │   ├── SessionEnded                410 session_ended
    │   ├── PayloadTooLarge             413 payload_too_large
    │   ├── UnsupportedMediaType        415 unsupported_media_type (a body that is not JSON)
    │   ├── RateLimited                 429 rate_limited         (+ Retry-After)
    │   └── Unavailable                 503 unavailable          (+ Retry-After)
    └── ProtocolError                   a WebSocket frame we refuse; carries ``code`` and,
        │                               when the connection must end, ``close_code``
        ├── MalformedMessage            error malformed_message (connection stays open)
        ├── UnknownType                 error unknown_type
        ├── InvalidLocation             error invalid_location
        ├── InvalidPlace                error invalid_place
        ├── InvalidStatus               error invalid_status
        ├── MessageRateLimited          error rate_limited
        └── MessageTooBig               close 1009

Rule: the HTTP edge maps an ``ApiError`` to exactly one status and
``{"error": {"code", "message"}}`` body, with a ``Retry-After`` header (whole
seconds) when the error has ``retry_after_s``; anything else becomes ``500 internal``
with no detail.  The WebSocket edge sends ``{"type": "error", "data": {"code",
"message"}}`` for a ``ProtocolError`` without ``close_code`` and closes with
``close_code`` otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

__all__ = [
    "ApiError",
    "BusUnavailable",
    "ConfigError",
    "EmbeddedDatabaseLost",
    "Forbidden",
    "InvalidLocation",
    "InvalidPlace",
    "InvalidRequest",
    "InvalidStatus",
    "LocshareError",
    "MalformedJson",
    "MalformedMessage",
    "MessageRateLimited",
    "MessageTooBig",
    "NotFound",
    "PayloadTooLarge",
    "ProtocolError",
    "RateLimited",
    "SessionEnded",
    "SessionFull",
    "StorageError",
    "StorageUnavailable",
    "TooManyPlaces",
    "Unauthorized",
    "Unavailable",
    "UnknownType",
    "UnsupportedMediaType",
]


class LocshareError(Exception):
    """Base class of every error locshare raises deliberately."""


class ConfigError(LocshareError):
    """A configuration value is missing or invalid; the message names the setting."""


class StorageError(LocshareError):
    """The database answered with something the storage adapter did not expect."""


class BusUnavailable(LocshareError):
    """Cluster mode: Redis could not be reached at start-up."""


class StorageUnavailable(StorageError):
    """The database cannot be reached (down, restarting, pool exhausted)."""


class EmbeddedDatabaseLost(StorageUnavailable):
    """The embedded PostgreSQL died and the supervisor could not bring it back within
    its budget (see ``locshare._restart``).  Raised by ``run_server`` after its graceful
    shutdown, so that the process exits non-zero and its service manager restarts it."""


class ApiError(LocshareError):
    """An error with a stable machine-readable ``code`` and an HTTP status."""

    code = "internal"
    http_status = 500
    # Whole seconds after which a retry may succeed: the Retry-After header.
    retry_after_s: int | None = None

    def __init__(
        self, message: str, *, field: str | None = None, retry_after_s: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s

    def to_body(self) -> dict[str, dict[str, str]]:
        error = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


class MalformedJson(ApiError):
    code = "malformed_json"
    http_status = 400


class InvalidRequest(ApiError):
    code = "invalid_request"
    http_status = 422


class Unauthorized(ApiError):
    code = "unauthorized"
    http_status = 401


class Forbidden(ApiError):
    code = "forbidden"
    http_status = 403


class NotFound(ApiError):
    code = "not_found"
    http_status = 404


class SessionFull(ApiError):
    code = "session_full"
    http_status = 409


class TooManyPlaces(ApiError):
    code = "too_many_places"
    http_status = 409


class SessionEnded(ApiError):
    code = "session_ended"
    http_status = 410


class PayloadTooLarge(ApiError):
    code = "payload_too_large"
    http_status = 413


class UnsupportedMediaType(ApiError):
    code = "unsupported_media_type"
    http_status = 415


class RateLimited(ApiError):
    """``retry_after_s``: from the token bucket when one refused; otherwise a guess."""

    code = "rate_limited"
    http_status = 429
    retry_after_s: int | None = 10


class Unavailable(ApiError):
    code = "unavailable"
    http_status = 503
    retry_after_s: int | None = 5


# The Retry-After of a 429 or 503 that carries none of its own (edges other than the
# ApiError handlers: Quart's own errors, WebSocket handshake refusals).
DEFAULT_RETRY_AFTER_S: Final[Mapping[int, int | None]] = {
    429: RateLimited.retry_after_s,
    503: Unavailable.retry_after_s,
}


class ProtocolError(LocshareError):
    """A client frame we refuse.

    ``close_code`` is ``None`` when the connection stays open and the client gets an
    ``error`` frame; otherwise the connection is closed with that code.
    """

    code = "malformed_message"
    close_code: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedMessage(ProtocolError):
    code = "malformed_message"


class UnknownType(ProtocolError):
    code = "unknown_type"


class InvalidLocation(ProtocolError):
    code = "invalid_location"


class InvalidPlace(ProtocolError):
    code = "invalid_place"


class InvalidStatus(ProtocolError):
    code = "invalid_status"


class MessageRateLimited(ProtocolError):
    code = "rate_limited"


class MessageTooBig(ProtocolError):
    code = "message_too_big"
    close_code = 1009
