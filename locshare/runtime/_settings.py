"""The slice of :class:`~locshare._config.Config` the runtime needs, built from it.

Rule: a setting has one default, in ``Config``.  :meth:`RuntimeSettings.from_config`
is the only way the runtime gets its settings (tests build a ``Config`` too), and the
fields below that are not settings are named constants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .._config import Config
from ..proto._rates import RatePolicy
from ..proto._validation import MAX_PARTICIPANTS

OUTBOX_MAX_FRAMES: Final = 64
CLOSE_GRACE_S: Final = 2.0
INBOX_MAX_EVENTS: Final = 1024


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    location_ttl_s: float
    update_interval_s: float
    flush_interval_s: float
    flush_interval_min_s: float
    flush_interval_max_s: float
    inactivity_timeout_s: float
    idle_unload_s: float
    max_fit_zoom: float
    slow_client_timeout_s: float
    max_message_bytes: int
    max_messages_per_s: float
    sweep_interval_s: float
    ended_retention_s: float
    ws_connections_per_address: int
    ws_connects_per_address_per_min: int
    max_sessions_in_memory: int
    shutdown_grace_s: float
    rates: RatePolicy
    # Not settings: fixed by design (docs/design.md says why).
    block_size: int = MAX_PARTICIPANTS
    outbox_max_frames: int = OUTBOX_MAX_FRAMES
    close_grace_s: float = CLOSE_GRACE_S
    inbox_max_events: int = INBOX_MAX_EVENTS

    @classmethod
    def from_config(cls, config: Config, **fixed: int | float) -> RuntimeSettings:
        """``fixed``: override the non-setting fields (tests: a smaller outbox)."""
        return cls(
            location_ttl_s=config.location_ttl_s,
            update_interval_s=config.update_interval_s,
            flush_interval_s=config.flush_interval_s,
            flush_interval_min_s=config.flush_interval_min_s,
            flush_interval_max_s=config.flush_interval_max_s,
            inactivity_timeout_s=config.inactivity_timeout_s,
            idle_unload_s=config.idle_unload_s,
            max_fit_zoom=config.max_fit_zoom,
            slow_client_timeout_s=config.slow_client_timeout_s,
            max_message_bytes=config.max_message_bytes,
            max_messages_per_s=config.max_messages_per_s,
            sweep_interval_s=config.sweep_interval_s,
            ended_retention_s=config.ended_retention_s,
            ws_connections_per_address=config.ws_connections_per_address,
            ws_connects_per_address_per_min=config.ws_connects_per_address_per_min,
            max_sessions_in_memory=config.max_sessions_in_memory,
            shutdown_grace_s=config.shutdown_grace_s,
            rates=RatePolicy(
                base_s=config.update_interval_s,
                stationary_s=config.stationary_interval_s,
                at_place_s=config.at_place_interval_s,
                unwatched_s=config.unwatched_interval_s,
                stationary_distance_m=config.stationary_distance_m,
                stationary_window_s=config.stationary_window_s,
                ttl_s=config.location_ttl_s,
            ),
            **fixed,  # type: ignore[arg-type]
        )

    @property
    def limits(self) -> dict[str, float | int]:
        return {
            "location_ttl_s": self.location_ttl_s,
            "update_interval_s": self.update_interval_s,
            "flush_interval_ms": round(self.flush_interval_s * 1000),
            "max_messages_per_s": self.max_messages_per_s,
            "max_message_bytes": self.max_message_bytes,
        }
