// The local picture of a session, and the pure function that applies server
// messages to it. No I/O and no clock, so it is tested without a server.
import '../api/protocol.dart';

enum ConnectionPhase { connecting, online, offline }

/// Why this device is no longer in the session: we left (close 1000), it ended
/// (`session_ended`, close 4000, or REST says so), we were removed (4403), the
/// same pass connected elsewhere (4001), or the token was refused (4401).
enum StopReason { left, ended, removed, replaced, unauthorized }

/// A refusal from the server worth telling the user about (`invalid_place`,
/// `invalid_status`, `forbidden`). [seq] grows with every one, so the same text
/// twice is still two notices.
class Notice {
  const Notice(this.seq, this.code, this.message);

  final int seq;
  final String code;
  final String message;
}

/// Error codes answering something the user did (a place, a status): shown to them.
const userFacingErrorCodes = {'invalid_place', 'invalid_status', 'forbidden'};

class SessionView {
  const SessionView({
    this.session,
    this.you,
    this.participants = const {},
    this.viewport,
    this.limits = const Limits(),
    this.places = const {},
    this.arrivals = const {},
    this.route,
    this.convoy,
    this.pace,
    this.notice,
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
  final Map<String, Place> places; // by place_id, in the order they were added
  final Set<Arrival> arrivals; // who is at which place now
  final SessionRoute? route;
  final Convoy? convoy; // null without a route, or before the first one
  final UpdateInterval? pace; // the latest `update_interval`; null: none yet
  final Notice? notice;
  final ConnectionPhase connection;
  final bool sharing; // this device is sending its location
  final String? endedReason; // `ended`, `expired` or `inactive`
  final StopReason? stopped;

  bool get ready => session != null;

  Participant? get me {
    final id = you?.userId;
    return id == null ? null : participants[id];
  }

  /// How often to send a position: the server's `update_interval`, and before
  /// the first one `session_state.limits.update_interval_s`.
  Duration get sendInterval => pace?.interval ?? limits.updateInterval;

  /// The participants at [placeId] now.
  List<Participant> presentAt(String placeId) => [
        for (final arrival in arrivals)
          if (arrival.placeId == placeId && participants[arrival.userId] != null) participants[arrival.userId]!,
      ];

  /// Everyone whose status is `need_help`, oldest request first.
  List<Participant> get needingHelp {
    final far = DateTime.utc(9999);
    return participants.values.where((p) => p.needsHelp).toList()
      ..sort((a, b) => (a.status!.at ?? far).compareTo(b.status!.at ?? far));
  }

  /// Null arguments keep a value; [clearRoute] and [clearConvoy] set those to null.
  SessionView copyWith({
    Map<String, Participant>? participants,
    ViewportHint? viewport,
    Map<String, Place>? places,
    Set<Arrival>? arrivals,
    SessionRoute? route,
    bool clearRoute = false,
    Convoy? convoy,
    bool clearConvoy = false,
    UpdateInterval? pace,
    Notice? notice,
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
        places: places ?? this.places,
        arrivals: arrivals ?? this.arrivals,
        route: clearRoute ? null : route ?? this.route,
        convoy: clearConvoy ? null : convoy ?? this.convoy,
        pace: pace ?? this.pace,
        notice: notice ?? this.notice,
        connection: connection ?? this.connection,
        sharing: sharing ?? this.sharing,
        endedReason: endedReason ?? this.endedReason,
        stopped: stopped ?? this.stopped,
      );
}

/// Applies one server message. `session_state` replaces everything the client
/// knew (it is sent again after every reconnect); the rest are deltas. Only the
/// pace survives a `session_state`: an `update_interval` follows it anyway, and
/// until then the last one asked for is the better guess.
SessionView applyMessage(SessionView view, ServerMessage message) => switch (message) {
      SessionState m => SessionView(
          session: m.session,
          you: m.you,
          participants: {for (final p in m.participants) p.userId: p},
          viewport: m.viewport,
          limits: m.limits,
          places: {for (final p in m.places) p.placeId: p},
          arrivals: m.arrivals.toSet(),
          route: m.route,
          convoy: m.convoy,
          pace: view.pace,
          notice: view.notice,
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
          ? view.copyWith(
              participants: Map.of(view.participants)..remove(m.userId),
              arrivals: view.arrivals.where((a) => a.userId != m.userId).toSet(),
            )
          : view,
      Presence m => _update(view, m.userId, (p) => p.copyWith(online: m.online)),
      Locations m => _locations(view, m.updates),
      // Kept at the last known position, shown greyed (docs/protocol.md allows either).
      ParticipantStale m => _update(view, m.userId, (p) => p.copyWith(stale: true, lastSeen: m.lastSeen)),
      ViewportMessage m => view.copyWith(viewport: m.hint),
      SessionEnded m => view.copyWith(endedReason: m.reason),
      UpdateInterval m => view.copyWith(pace: m),
      PlaceAdded m => view.copyWith(places: {...view.places, m.place.placeId: m.place}),
      PlaceRemoved m => view.places.containsKey(m.placeId)
          ? view.copyWith(
              places: Map.of(view.places)..remove(m.placeId),
              arrivals: view.arrivals.where((a) => a.placeId != m.placeId).toSet(),
            )
          : view,
      // Arrivals at places or of people this client does not know are dropped: the
      // next session_state brings whatever is still true.
      Arrived m => view.places.containsKey(m.placeId) && view.participants.containsKey(m.userId)
          ? view.copyWith(arrivals: {...view.arrivals, m.arrival})
          : view,
      Departed m => view.arrivals.contains(m.arrival)
          ? view.copyWith(arrivals: view.arrivals.where((a) => a != m.arrival).toSet())
          : view,
      RouteSet m => view.copyWith(route: m.route),
      // The convoy only exists along a route.
      RouteCleared() => view.copyWith(clearRoute: true, clearConvoy: true),
      ConvoyMessage m => view.copyWith(convoy: m.convoy),
      StatusMessage m => _update(view, m.userId, (p) => p.copyWith(status: m.status, clearStatus: m.status == null)),
      ServerError m when userFacingErrorCodes.contains(m.code) =>
        view.copyWith(notice: Notice((view.notice?.seq ?? 0) + 1, m.code, m.message)),
      // locate_now asks for a side effect (one fresh fix), not for a change of state.
      LocateNow() || Pong() || ServerError() || UnknownMessage() => view,
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
