// The WebSocket protocol of docs/protocol.md (version 1), both directions.
//
// Field names are spelled out as string literals on purpose: the server's test
// suite (tests/test_mobile_app.py) checks that every message type and field of
// docs/protocol.md appears in lib/api/. Unknown fields are ignored, so newer
// servers keep working with this client.
import 'dart:convert';
import 'dart:math' as math;

typedef Json = Map<String, Object?>;

/// WebSocket close codes (docs/protocol.md, "Close codes").
class CloseCode {
  CloseCode._();

  static const normal = 1000; // we sent `leave`
  static const sessionEnded = 4000;
  static const replaced = 4001;
  static const unauthorized = 4401;
  static const left = 4403;

  /// Closes after which reconnecting cannot help; everything else (1001, 1006,
  /// 1009, 1013, ...) is retried with backoff.
  static const terminal = {normal, sessionEnded, replaced, unauthorized, left};
}

// --- JSON helpers: every failure is a FormatException --------------------------------
Json _object(Object? value, String what) =>
    value is Map<String, Object?> ? value : throw FormatException('$what must be an object');

T _get<T>(Json json, String key) {
  final value = json[key];
  return value is T ? value : throw FormatException("'$key' is missing or not a $T");
}

double _number(Json json, String key) => _get<num>(json, key).toDouble();

double? _numberOrNull(Json json, String key) => _get<num?>(json, key)?.toDouble();

int _int(Json json, String key) => _get<num>(json, key).round();

String _string(Json json, String key) => _get<String>(json, key);

DateTime _time(Json json, String key) => DateTime.parse(_string(json, key));

List<Object?> _list(Json json, String key) => _get<List<Object?>>(json, key);

Json _child(Json json, String key) => _object(json[key], "'$key'");

// --- shared shapes --------------------------------------------------------------------
/// *Session* of `session_state`.
class SessionInfo {
  SessionInfo.fromJson(Json json)
      : id = _string(json, 'id'),
        name = _string(json, 'name'),
        createdAt = _time(json, 'created_at'),
        expiresAt = _time(json, 'expires_at'),
        maxParticipants = _int(json, 'max_participants');

  final String id;
  final String name;
  final DateTime createdAt;
  final DateTime expiresAt;
  final int maxParticipants;
}

/// *You* of `session_state`.
class You {
  You.fromJson(Json json)
      : userId = _string(json, 'user_id'),
        displayName = _string(json, 'display_name'),
        avatarColor = _string(json, 'avatar_color');

  final String userId;
  final String displayName;
  final String avatarColor;
}

/// *Location*: an entry of `locations.updates` (with [userId]), or a participant's
/// last fresh location in `session_state` (without it).
class Location {
  Location.fromJson(Json json)
      : userId = _get<String?>(json, 'user_id'),
        lat = _number(json, 'lat'),
        lng = _number(json, 'lng'),
        accuracy = _numberOrNull(json, 'accuracy'),
        heading = _numberOrNull(json, 'heading'),
        speed = _numberOrNull(json, 'speed'),
        timestamp = _time(json, 'timestamp');

  final String? userId;
  final double lat;
  final double lng;
  final double? accuracy; // metres
  final double? heading; // degrees
  final double? speed; // metres per second
  final DateTime timestamp;
}

/// *Participant* of `session_state`; also built from `participant_joined`.
class Participant {
  const Participant({
    required this.userId,
    required this.displayName,
    required this.avatarColor,
    required this.joinedAt,
    required this.online,
    required this.lastSeen,
    this.stale = false,
    this.location,
  });

  Participant.fromJson(Json json)
      : userId = _string(json, 'user_id'),
        displayName = _string(json, 'display_name'),
        avatarColor = _string(json, 'avatar_color'),
        joinedAt = _time(json, 'joined_at'),
        online = _get<bool>(json, 'online'),
        lastSeen = _time(json, 'last_seen'),
        stale = _get<bool>(json, 'stale'),
        location = json['location'] == null ? null : Location.fromJson(_child(json, 'location'));

  final String userId;
  final String displayName;
  final String avatarColor;
  final DateTime joinedAt;
  final bool online;
  final DateTime lastSeen;
  final bool stale;

  /// The last fresh location, or once [stale] the last known one.
  final Location? location;

  Participant copyWith({bool? online, DateTime? lastSeen, bool? stale, Location? location}) =>
      Participant(
        userId: userId,
        displayName: displayName,
        avatarColor: avatarColor,
        joinedAt: joinedAt,
        online: online ?? this.online,
        lastSeen: lastSeen ?? this.lastSeen,
        stale: stale ?? this.stale,
        location: location ?? this.location,
      );
}

/// *Limits* of `session_state` (defaults: the server's defaults).
class Limits {
  const Limits()
      : locationTtlS = 30,
        updateIntervalS = 2,
        flushIntervalMs = 100,
        maxMessagesPerS = 10,
        maxMessageBytes = 16384;

  Limits.fromJson(Json json)
      : locationTtlS = _number(json, 'location_ttl_s'),
        updateIntervalS = _number(json, 'update_interval_s'),
        flushIntervalMs = _int(json, 'flush_interval_ms'),
        maxMessagesPerS = _number(json, 'max_messages_per_s'),
        maxMessageBytes = _int(json, 'max_message_bytes');

  final double locationTtlS;
  final double updateIntervalS;
  final int flushIntervalMs;
  final double maxMessagesPerS;
  final int maxMessageBytes;

  /// The send interval, never faster than half a second whatever the server says.
  Duration get updateInterval => Duration(milliseconds: (math.max(updateIntervalS, 0.5) * 1000).round());
}

/// *BBox*: [west] is greater than [east] when the box crosses the antimeridian.
class BBox {
  BBox.fromJson(Json json)
      : west = _number(json, 'west'),
        south = _number(json, 'south'),
        east = _number(json, 'east'),
        north = _number(json, 'north');

  final double west;
  final double south;
  final double east;
  final double north;
}

/// A viewport-fit hint: the `viewport` message, or `session_state.viewport`.
class ViewportHint {
  ViewportHint.fromJson(Json json)
      : bbox = BBox.fromJson(_child(json, 'bbox')),
        centerLat = _number(_child(json, 'center'), 'lat'),
        centerLng = _number(_child(json, 'center'), 'lng'),
        zoom = _number(json, 'zoom'),
        participants = _list(json, 'participants').whereType<String>().toList();

  final BBox bbox;

  /// *Center*: the centre of [bbox] in Web Mercator.
  final double centerLat;
  final double centerLng;

  /// Fitted to this client's `viewport_size`, at most 17.
  final double zoom;

  /// User ids the box covers.
  final List<String> participants;
}

// --- server to client -----------------------------------------------------------------
sealed class ServerMessage {
  const ServerMessage();

  /// Parses one text frame; throws [FormatException] if it is not a valid message.
  static ServerMessage parse(String frame) {
    final envelope = _object(jsonDecode(frame), 'frame');
    final type = _string(envelope, 'type');
    final Json data = envelope['data'] == null ? const {} : _child(envelope, 'data');
    return switch (type) {
      'session_state' => SessionState.fromJson(data),
      'participant_joined' => ParticipantJoined.fromJson(data),
      'participant_left' => ParticipantLeft(_string(data, 'user_id'), _string(data, 'reason')),
      'presence' => Presence(_string(data, 'user_id'), _get<bool>(data, 'online')),
      'locations' => Locations.fromJson(data),
      'participant_stale' => ParticipantStale(_string(data, 'user_id'), _time(data, 'last_seen')),
      'viewport' => ViewportMessage(ViewportHint.fromJson(data)),
      'pong' => Pong(_time(data, 'server_time'), data['id']),
      'session_ended' => SessionEnded(_string(data, 'reason')),
      'error' => ServerError(_string(data, 'code'), _string(data, 'message')),
      _ => UnknownMessage(type),
    };
  }

  /// Like [parse], but null for a frame this client cannot understand.
  static ServerMessage? tryParse(String frame) {
    try {
      return parse(frame);
    } on FormatException {
      return null;
    }
  }
}

/// Always the first frame, and again after every reconnect: replaces all state.
class SessionState extends ServerMessage {
  SessionState.fromJson(Json json)
      : session = SessionInfo.fromJson(_child(json, 'session')),
        you = You.fromJson(_child(json, 'you')),
        participants = [for (final p in _list(json, 'participants')) Participant.fromJson(_object(p, 'participant'))],
        viewport = json['viewport'] == null ? null : ViewportHint.fromJson(_child(json, 'viewport')),
        limits = Limits.fromJson(_child(json, 'limits'));

  final SessionInfo session;
  final You you;
  final List<Participant> participants;
  final ViewportHint? viewport;
  final Limits limits;
}

class ParticipantJoined extends ServerMessage {
  ParticipantJoined.fromJson(Json json)
      : userId = _string(json, 'user_id'),
        displayName = _string(json, 'display_name'),
        avatarColor = _string(json, 'avatar_color'),
        joinedAt = _time(json, 'joined_at'),
        online = _get<bool>(json, 'online');

  final String userId;
  final String displayName;
  final String avatarColor;
  final DateTime joinedAt;
  final bool online;
}

class ParticipantLeft extends ServerMessage {
  const ParticipantLeft(this.userId, this.reason);

  final String userId;
  final String reason; // `left` or `removed`
}

class Presence extends ServerMessage {
  const Presence(this.userId, this.online);

  final String userId;
  final bool online;
}

class Locations extends ServerMessage {
  Locations.fromJson(Json json)
      : updates = [
          for (final entry in _list(json, 'updates'))
            Location.fromJson(_object(entry, 'update')),
        ] {
    if (updates.any((u) => u.userId == null)) throw const FormatException("'user_id' is missing");
  }

  final List<Location> updates;
}

class ParticipantStale extends ServerMessage {
  const ParticipantStale(this.userId, this.lastSeen);

  final String userId;
  final DateTime lastSeen;
}

class ViewportMessage extends ServerMessage {
  const ViewportMessage(this.hint);

  final ViewportHint hint;
}

class Pong extends ServerMessage {
  const Pong(this.serverTime, [this.id]);

  final DateTime serverTime;

  /// The `id` of the `ping` this answers (null if it had none).
  final Object? id;
}

class SessionEnded extends ServerMessage {
  const SessionEnded(this.reason);

  final String reason; // `ended`, `expired` or `inactive`
}

/// `error`: something we sent was refused; the connection stays open.
class ServerError extends ServerMessage {
  const ServerError(this.code, this.message);

  final String code;
  final String message;
}

/// A message type from a newer server: ignored.
class UnknownMessage extends ServerMessage {
  const UnknownMessage(this.type);

  final String type;
}

// --- client to server -----------------------------------------------------------------
sealed class ClientMessage {
  const ClientMessage(this.type);

  final String type;

  Json? get data => null;

  String encode() {
    final payload = data;
    return jsonEncode({'type': type, if (payload != null) 'data': payload});
  }
}

class LocationUpdate extends ClientMessage {
  const LocationUpdate({
    required this.lat,
    required this.lng,
    this.accuracy,
    this.heading,
    this.speed,
    this.timestamp,
  }) : super('location_update');

  /// Builds an update from a platform fix, dropping optional values the server
  /// would refuse (platforms report "unknown" as -1, and a refused update would
  /// lose the position too). Null if the position itself is unusable.
  static LocationUpdate? fromFix(double lat, double lng,
      {double? accuracy, double? heading, double? speed, DateTime? timestamp}) {
    bool within(double? v, double lo, double hi) => v != null && v.isFinite && v >= lo && v <= hi;
    if (!within(lat, -90, 90) || !within(lng, -180, 180)) return null;
    return LocationUpdate(
      lat: lat,
      lng: lng,
      accuracy: within(accuracy, 0, 1e7) ? accuracy : null,
      heading: within(heading, 0, 360) ? heading : null,
      speed: within(speed, 0, 1e4) ? speed : null,
      timestamp: timestamp,
    );
  }

  final double lat;
  final double lng;
  final double? accuracy;
  final double? heading;
  final double? speed;
  final DateTime? timestamp;

  @override
  Json get data => {
        'lat': lat,
        'lng': lng,
        'accuracy': accuracy,
        'heading': heading,
        'speed': speed,
        'timestamp': timestamp?.toUtc().toIso8601String(),
      };
}

class ViewportSize extends ClientMessage {
  const ViewportSize(this.width, this.height, this.padding) : super('viewport_size');

  static const defaultPadding = 48;

  /// Fits a logical screen size into the server's bounds (64 to 16384 px),
  /// shrinking the padding on tiny screens: the server needs 2 * padding < min(w, h).
  factory ViewportSize.forScreen(double width, double height, {int padding = defaultPadding}) {
    int px(double v) => v.isFinite ? math.max(64, math.min(16384, v.round())) : 64;
    final w = px(width);
    final h = px(height);
    return ViewportSize(w, h, math.min(padding, (math.min(w, h) - 1) ~/ 2));
  }

  final int width;
  final int height;
  final int padding;

  @override
  Json get data => {'width': width, 'height': height, 'padding': padding};

  @override
  bool operator ==(Object other) =>
      other is ViewportSize && other.width == width && other.height == height && other.padding == padding;

  @override
  int get hashCode => Object.hash(width, height, padding);
}

class Ping extends ClientMessage {
  const Ping([this.id]) : super('ping');

  /// Echoed in the `pong`; lets a caller match answers or time the round trip.
  final Object? id;

  @override
  Json? get data => id == null ? null : {'id': id};
}

class Leave extends ClientMessage {
  const Leave() : super('leave');
}
