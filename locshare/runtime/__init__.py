"""The runtime: one actor per live session, the hub that hosts them, and the seams
between them and the rest (the session bus, the local fan-out, the narrow hosts).

Layering: the runtime uses the sans-io cores (``locshare.geo``, the protocol) and the
storage seam; the network edge (``locshare.net``) calls into it.  It never imports the
edge: a transport reaches it through the :class:`~locshare.net._transport.Transport`
protocol only.
"""

from __future__ import annotations

from ._actor import ActorStatistics, Member, SessionActor, SessionHost
from ._bus import LocalBus, SessionBus
from ._connection import Connection, ConnectionHost
from ._fanout import Fanout, LocalFanout
from ._hub import Hub, open_hub
from ._inbox import Inbox, InboxStatistics
from ._settings import RuntimeSettings

__all__ = [
    "ActorStatistics",
    "Connection",
    "ConnectionHost",
    "Fanout",
    "Hub",
    "Inbox",
    "InboxStatistics",
    "LocalBus",
    "LocalFanout",
    "Member",
    "RuntimeSettings",
    "SessionActor",
    "SessionBus",
    "SessionHost",
    "open_hub",
]
