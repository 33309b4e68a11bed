// The local picture of a session, and the pure function that applies server
// messages to it. No I/O and no clock, so it is tested without a server.
import '../api/protocol.dart';

enum ConnectionPhase { connecting, online, offline }

/// Why this device is no longer in the session: we left (close 1000), it ended
/// (`session_ended`, close 4000, or REST says so), we were removed (4403), the
/// same pass connected elsewhere (4001), or the token was refused (4401).
enum StopReason { left, ended, removed, replaced, unauthorized }

class SessionView {
  const SessionView({
    this.session,
    this.you,
    this.participants = const {},
    this.viewport,
    this.limits = const Limits(),
    this.connection = ConnectionPhase.connecting,
    this.sharing = false,
    this.endedReason,
    this.stopped,
  });

  final SessionInfo? session;
  final You? you;
  final Map<String, Participant> participants;
  final ViewportHint? viewport; // null while nobody shares a location
  final Limits limits;
  final ConnectionPhase connection;
  final bool sharing; // this device is sending its location
  final String? endedReason; // `ended`, `expired` or `inactive`
  final StopReason? stopped;

  bool get ready => session != null;

  Participant? get me {
    final id = you?.userId;
    return id == null ? null : participants[id];
  }

  SessionView copyWith({
    Map<String, Participant>? participants,
    ViewportHint? viewport,
    ConnectionPhase? connection,
    bool? sharing,
    String? endedReason,
    StopReason? stopped,
  }) =>
      SessionView(
        session: session,
        you: you,
        participants: participants ?? this.participants,
        viewport: viewport ?? this.viewport,
        limits: limits,
        connection: connection ?? this.connection,
        sharing: sharing ?? this.sharing,
        endedReason: endedReason ?? this.endedReason,
        stopped: stopped ?? this.stopped,
      );
}

/// Applies one server message. `session_state` replaces everything the client
/// knew (it is sent again after every reconnect); the rest are deltas.
SessionView applyMessage(SessionView view, ServerMessage message) => switch (message) {
      SessionState m => SessionView(
          session: m.session,
          you: m.you,
          participants: {for (final p in m.participants) p.userId: p},
          viewport: m.viewport,
          limits: m.limits,
          connection: view.connection,
          sharing: view.sharing,
          endedReason: view.endedReason,
          stopped: view.stopped,
        ),
      ParticipantJoined m => view.copyWith(participants: {
          ...view.participants,
          m.userId: Participant(
            userId: m.userId,
            displayName: m.displayName,
            avatarColor: m.avatarColor,
            joinedAt: m.joinedAt,
            online: m.online,
            lastSeen: m.joinedAt,
          ),
        }),
      ParticipantLeft m => view.participants.containsKey(m.userId)
          ? view.copyWith(participants: Map.of(view.participants)..remove(m.userId))
          : view,
      Presence m => _update(view, m.userId, (p) => p.copyWith(online: m.online)),
      Locations m => _locations(view, m.updates),
      // Kept at the last known position, shown greyed (docs/protocol.md allows either).
      ParticipantStale m => _update(view, m.userId, (p) => p.copyWith(stale: true, lastSeen: m.lastSeen)),
      ViewportMessage m => view.copyWith(viewport: m.hint),
      SessionEnded m => view.copyWith(endedReason: m.reason),
      Pong() || ServerError() || UnknownMessage() => view,
    };

SessionView _update(SessionView view, String userId, Participant Function(Participant) change) {
  final participant = view.participants[userId];
  if (participant == null) return view;
  return view.copyWith(participants: {...view.participants, userId: change(participant)});
}

SessionView _locations(SessionView view, List<Location> updates) {
  final next = Map.of(view.participants);
  for (final update in updates) {
    final participant = next[update.userId];
    if (participant == null) continue;
    next[participant.userId] = participant.copyWith(
      location: update,
      stale: false,
      lastSeen: update.timestamp.isAfter(participant.lastSeen) ? update.timestamp : null,
    );
  }
  return view.copyWith(participants: next);
}
