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

DateTime? _timeOrNull(Json json, String key) => json[key] == null ? null : _time(json, key);

List<Object?> _list(Json json, String key) => _get<List<Object?>>(json, key);

/// A list added in a later protocol version: absent (an older server) reads as empty.
List<Object?> _listOrEmpty(Json json, String key) => json[key] == null ? const [] : _list(json, key);

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
    this.status,
  });

  Participant.fromJson(Json json)
      : userId = _string(json, 'user_id'),
        displayName = _string(json, 'display_name'),
        avatarColor = _string(json, 'avatar_color'),
        joinedAt = _time(json, 'joined_at'),
        online = _get<bool>(json, 'online'),
        lastSeen = _time(json, 'last_seen'),
        stale = _get<bool>(json, 'stale'),
        location = json['location'] == null ? null : Location.fromJson(_child(json, 'location')),
        status = json['status'] == null ? null : ParticipantStatus.fromJson(_child(json, 'status'));

  final String userId;
  final String displayName;
  final String avatarColor;
  final DateTime joinedAt;
  final bool online;
  final DateTime lastSeen;
  final bool stale;

  /// The last fresh location, or once [stale] the last known one.
  final Location? location;

  /// What they said about how they are (`set_status`), null if nothing.
  final ParticipantStatus? status;

  bool get needsHelp => status?.status == StatusKind.needHelp;

  /// [clearStatus]: set [status] to null (a null [status] argument keeps it).
  Participant copyWith({
    bool? online,
    DateTime? lastSeen,
    bool? stale,
    Location? location,
    ParticipantStatus? status,
    bool clearStatus = false,
  }) =>
      Participant(
        userId: userId,
        displayName: displayName,
        avatarColor: avatarColor,
        joinedAt: joinedAt,
        online: online ?? this.online,
        lastSeen: lastSeen ?? this.lastSeen,
        stale: stale ?? this.stale,
        location: location ?? this.location,
        status: clearStatus ? null : status ?? this.status,
      );
}

/// The values of `set_status.status` (and `status.status`); a newer server may
/// send others, which are shown as they are.
class StatusKind {
  StatusKind._();

  static const onMyWay = 'on_my_way';
  static const arrived = 'arrived';
  static const onBreak = 'break';
  static const needHelp = 'need_help';

  static const all = [onMyWay, arrived, onBreak, needHelp];

  /// The longest note, in characters (code points, as the server counts them).
  static const maxTextChars = 80;
}

/// A participant's status: `{"status", "text", "at"}` in *Participant*, and the
/// fields of the `status` message.
class ParticipantStatus {
  const ParticipantStatus(this.status, {this.text, this.at});

  ParticipantStatus.fromJson(Json json)
      : status = _string(json, 'status'),
        text = _get<String?>(json, 'text'),
        at = _timeOrNull(json, 'at');

  final String status; // one of StatusKind, or newer
  final String? text;
  final DateTime? at; // when it was set
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

// --- places, the route and the convoy (GeoJSON positions are [lng, lat]) --------------
/// A WGS 84 position.
class GeoPoint {
  const GeoPoint(this.lat, this.lng);

  /// A GeoJSON position `[lng, lat]` (a third value, the altitude, is ignored).
  factory GeoPoint.fromGeoJson(Object? position) {
    if (position is List<Object?> && position.length >= 2) {
      final lng = position[0];
      final lat = position[1];
      // Longitudes are not bounded: a route may continue past 180 (unwrapped).
      if (lng is num && lat is num && lng.isFinite && lat.isFinite && lat.abs() <= 90) {
        return GeoPoint(lat.toDouble(), lng.toDouble());
      }
    }
    throw const FormatException('a GeoJSON position must be [lng, lat]');
  }

  final double lat;
  final double lng;

  List<double> toGeoJson() => [lng, lat];

  @override
  bool operator ==(Object other) => other is GeoPoint && other.lat == lat && other.lng == lng;

  @override
  int get hashCode => Object.hash(lat, lng);

  @override
  String toString() => 'GeoPoint($lat, $lng)';
}

/// The `coordinates` of a GeoJSON geometry object, which must be of [type].
List<Object?> _coordinates(Json geometry, String type) {
  if (_string(geometry, 'type') != type) throw FormatException("'geometry' must be a GeoJSON $type");
  return _list(geometry, 'coordinates');
}

List<GeoPoint> _positions(Object? value, String what) => value is List<Object?>
    ? [for (final position in value) GeoPoint.fromGeoJson(position)]
    : throw FormatException('$what must be a list of positions');

/// A polygon's outer ring without the closing position (GeoJSON repeats the first).
List<GeoPoint> _ring(Json geometry) {
  final rings = _coordinates(geometry, 'Polygon');
  if (rings.isEmpty) throw const FormatException('a Polygon needs a ring');
  final ring = _positions(rings.first, 'a ring');
  if (ring.length >= 2 && ring.first == ring.last) ring.removeLast();
  if (ring.length < 3) throw const FormatException('a ring needs at least three corners');
  return ring;
}

/// A GeoJSON Polygon of one [ring] (closed here if it is not).
Json polygonGeoJson(List<GeoPoint> ring) => {
      'type': 'Polygon',
      'coordinates': [
        [
          for (final point in ring) point.toGeoJson(),
          if (ring.isNotEmpty && ring.first != ring.last) ring.first.toGeoJson(),
        ],
      ],
    };

/// [lng] moved by whole turns into -180 to 180.
double normalizeLongitude(double lng) => lng >= -180 && lng <= 180 ? lng : (lng + 180) % 360 - 180;

/// [points] with each longitude moved by whole turns so that no step jumps by more
/// than 180 degrees: a line across the antimeridian stays one line (179, 181)
/// instead of crossing the whole map (179, -179).
List<GeoPoint> unwrapLongitudes(List<GeoPoint> points) {
  final unwrapped = <GeoPoint>[];
  for (final point in points) {
    var lng = point.lng;
    if (unwrapped.isNotEmpty) {
      final previous = unwrapped.last.lng;
      lng -= 360 * ((lng - previous) / 360).round();
    }
    unwrapped.add(GeoPoint(point.lat, lng));
  }
  return unwrapped;
}

/// The values of a place's `kind`; a newer server may send others.
class PlaceKind {
  PlaceKind._();

  static const meet = 'meet';
  static const poi = 'poi';
  static const hazard = 'hazard';
  static const parking = 'parking';
  static const fuel = 'fuel';
  static const food = 'food';

  static const all = [meet, poi, hazard, parking, fuel, food];
}

/// Bounds of `place_add` (docs/protocol.md).
class PlaceLimits {
  PlaceLimits._();

  static const maxNameChars = 60;
  static const minRadiusM = 10.0;
  static const maxRadiusM = 2000.0;
  static const defaultRadiusM = 50.0;
  static const maxPolygonVertices = 500;
  static const maxPlaces = 20;
}

/// A place of the session: `place_added`, `session_state.places`, and the REST
/// answers. Either a circle ([center] and [radiusM]) or a polygon ([ring]).
class Place {
  Place._({
    required this.placeId,
    required this.name,
    required this.kind,
    required this.author,
    required this.center,
    required this.radiusM,
    required this.ring,
    required this.createdAt,
  });

  factory Place.fromJson(Json json) {
    final geometry = _child(json, 'geometry');
    final radius = _numberOrNull(json, 'radius_m');
    final isPoint = _string(geometry, 'type') == 'Point';
    if (isPoint && (radius == null || !(radius > 0))) {
      throw const FormatException("a Point place needs a positive 'radius_m'");
    }
    return Place._(
      placeId: _string(json, 'place_id'),
      name: _string(json, 'name'),
      kind: _string(json, 'kind'),
      author: _get<String?>(json, 'author'),
      center: isPoint ? GeoPoint.fromGeoJson(_coordinates(geometry, 'Point')) : null,
      radiusM: isPoint ? radius : null,
      ring: isPoint ? null : _ring(geometry),
      createdAt: _time(json, 'created_at'),
    );
  }

  final String placeId;
  final String name;
  final String kind; // one of PlaceKind, or newer

  /// Who added it; null: the session's creator, over REST.
  final String? author;

  /// A circle's centre ([ring] is null then).
  final GeoPoint? center;
  final double? radiusM;

  /// A polygon's outer ring, without the closing position ([center] is null then).
  final List<GeoPoint>? ring;
  final DateTime createdAt;

  bool get isCircle => center != null;

  /// Where to put its icon: the centre, or the mean of the corners (unwrapped).
  GeoPoint get anchor {
    final c = center;
    if (c != null) return c;
    final corners = unwrapLongitudes(ring!);
    final lat = corners.fold<double>(0, (sum, p) => sum + p.lat) / corners.length;
    final lng = corners.fold<double>(0, (sum, p) => sum + p.lng) / corners.length;
    return GeoPoint(lat, normalizeLongitude(lng));
  }
}

/// Who is at which place now: `arrived`, `departed`, `session_state.arrivals`.
class Arrival {
  const Arrival(this.userId, this.placeId);

  Arrival.fromJson(Json json)
      : userId = _string(json, 'user_id'),
        placeId = _string(json, 'place_id');

  final String userId;
  final String placeId;

  @override
  bool operator ==(Object other) => other is Arrival && other.userId == userId && other.placeId == placeId;

  @override
  int get hashCode => Object.hash(userId, placeId);
}

/// The convoy's route: `route_set`, `session_state.route` and the REST answers.
class SessionRoute {
  SessionRoute.fromJson(Json json)
      : line = _positions(_coordinates(_child(json, 'geometry'), 'LineString'), "the route's 'coordinates'"),
        points = _int(json, 'points'),
        toleranceM = _number(json, 'tolerance_m'),
        lengthM = _number(json, 'length_m'),
        offRouteM = _number(json, 'off_route_m') {
    if (line.length < 2) throw const FormatException('a route needs at least two positions');
  }

  /// The simplified line (at most 2,000 positions) as the server sent it. It may
  /// cross the antimeridian: draw consecutive positions the short way round
  /// ([unwrapLongitudes]; flutter_map's layers do so themselves).
  final List<GeoPoint> line;

  /// Positions of the full route, as set.
  final int points;

  /// The simplification's tolerance in metres (0: not simplified).
  final double toleranceM;

  /// Length of the full route in metres.
  final double lengthM;

  /// Further than this from the route a rider counts as off route.
  final double offRouteM;
}

/// A rider further than `off_route_m` from the route.
class OffRoute {
  OffRoute.fromJson(Json json)
      : userId = _string(json, 'user_id'),
        distanceM = _number(json, 'distance_m');

  final String userId;
  final double distanceM;
}

/// Where everyone is along the route: `convoy` and `session_state.convoy`.
class Convoy {
  Convoy.fromJson(Json json)
      : order = [
          for (final id in _list(json, 'order'))
            id is String ? id : throw const FormatException("'order' holds user ids"),
        ],
        gapsM = [
          for (final gap in _list(json, 'gaps_m'))
            gap is num ? gap.toDouble() : throw const FormatException("'gaps_m' holds numbers"),
        ],
        gapsS = [
          for (final gap in _list(json, 'gaps_s'))
            gap == null || gap is num
                ? (gap as num?)?.toDouble()
                : throw const FormatException("'gaps_s' holds numbers or nulls"),
        ],
        offRoute = [
          for (final entry in _list(json, 'off_route')) OffRoute.fromJson(_object(entry, "an 'off_route' entry")),
        ] {
    final gaps = order.isEmpty ? 0 : order.length - 1;
    if (gapsM.length != gaps || gapsS.length != gaps) {
      throw const FormatException("'gaps_m' and 'gaps_s' need one entry between each two riders");
    }
  }

  /// User ids, leader first.
  final List<String> order;

  /// `gapsM[i]`: metres along the route between `order[i]` and `order[i + 1]`.
  final List<double> gapsM;

  /// The same gaps in seconds at the follower's recent speed (null: unknown).
  final List<double?> gapsS;
  final List<OffRoute> offRoute;

  /// How far [userId] is from the route, if they are off it.
  double? offRouteDistance(String userId) {
    for (final entry in offRoute) {
      if (entry.userId == userId) return entry.distanceM;
    }
    return null;
  }
}

/// The reasons of `update_interval`; a newer server may send others.
class PaceReason {
  PaceReason._();

  static const watched = 'watched';
  static const stationary = 'stationary';
  static const atPlace = 'at_place';
  static const nobodyWatching = 'nobody_watching';
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
      'update_interval' => UpdateInterval(_number(data, 'seconds'), _string(data, 'reason')),
      'locate_now' => const LocateNow(),
      'place_added' => PlaceAdded(Place.fromJson(data)),
      'place_removed' => PlaceRemoved(_string(data, 'place_id')),
      'arrived' => Arrived(Arrival.fromJson(data)),
      'departed' => Departed(Arrival.fromJson(data)),
      'route_set' => RouteSet(SessionRoute.fromJson(data)),
      'route_cleared' => const RouteCleared(),
      'convoy' => ConvoyMessage(Convoy.fromJson(data)),
      'status' => StatusMessage.fromJson(data),
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
        limits = Limits.fromJson(_child(json, 'limits')),
        places = [for (final p in _listOrEmpty(json, 'places')) Place.fromJson(_object(p, 'place'))],
        arrivals = [for (final a in _listOrEmpty(json, 'arrivals')) Arrival.fromJson(_object(a, 'arrival'))],
        route = json['route'] == null ? null : SessionRoute.fromJson(_child(json, 'route')),
        convoy = json['convoy'] == null ? null : Convoy.fromJson(_child(json, 'convoy'));

  final SessionInfo session;
  final You you;
  final List<Participant> participants;
  final ViewportHint? viewport;
  final Limits limits;
  final List<Place> places;

  /// Who is at which place now.
  final List<Arrival> arrivals;
  final SessionRoute? route;

  /// The latest convoy; null without a route.
  final Convoy? convoy;
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

/// How often to send `location_update`, and why (one of [PaceReason], or newer).
class UpdateInterval extends ServerMessage {
  const UpdateInterval(this.seconds, this.reason);

  final double seconds;
  final String reason;

  /// The send interval, never faster than half a second whatever the server says.
  Duration get interval => Duration(milliseconds: (math.max(seconds, 0.5) * 1000).round());
}

/// Someone started looking at the map: send one fresh position now.
class LocateNow extends ServerMessage {
  const LocateNow();
}

class PlaceAdded extends ServerMessage {
  const PlaceAdded(this.place);

  final Place place;
}

class PlaceRemoved extends ServerMessage {
  const PlaceRemoved(this.placeId);

  final String placeId;
}

/// A participant arrived at a place.
class Arrived extends ServerMessage {
  const Arrived(this.arrival);

  final Arrival arrival;

  String get userId => arrival.userId;
  String get placeId => arrival.placeId;
}

/// A participant left a place.
class Departed extends ServerMessage {
  const Departed(this.arrival);

  final Arrival arrival;

  String get userId => arrival.userId;
  String get placeId => arrival.placeId;
}

class RouteSet extends ServerMessage {
  const RouteSet(this.route);

  final SessionRoute route;
}

class RouteCleared extends ServerMessage {
  const RouteCleared();
}

class ConvoyMessage extends ServerMessage {
  const ConvoyMessage(this.convoy);

  final Convoy convoy;
}

/// A participant set or cleared ([status] null) their status.
class StatusMessage extends ServerMessage {
  const StatusMessage(this.userId, this.status);

  factory StatusMessage.fromJson(Json json) {
    final userId = _string(json, 'user_id');
    final status = _get<String?>(json, 'status');
    final text = _get<String?>(json, 'text');
    final at = _timeOrNull(json, 'at');
    return StatusMessage(userId, status == null ? null : ParticipantStatus(status, text: text, at: at));
  }

  final String userId;
  final ParticipantStatus? status;
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
  const ViewportSize(this.width, this.height, this.padding, {this.includePlaces = false})
      : super('viewport_size');

  static const defaultPadding = 48;

  /// Fits a logical screen size into the server's bounds (64 to 16384 px),
  /// shrinking the padding on tiny screens: the server needs 2 * padding < min(w, h).
  factory ViewportSize.forScreen(double width, double height,
      {int padding = defaultPadding, bool includePlaces = false}) {
    int px(double v) => v.isFinite ? math.max(64, math.min(16384, v.round())) : 64;
    final w = px(width);
    final h = px(height);
    return ViewportSize(w, h, math.min(padding, (math.min(w, h) - 1) ~/ 2),
        includePlaces: includePlaces);
  }

  final int width;
  final int height;
  final int padding;

  /// The server's hints then fit the session's places too, not only positions.
  final bool includePlaces;

  @override
  Json get data => {
        'width': width,
        'height': height,
        'padding': padding,
        'include_places': includePlaces,
      };

  @override
  bool operator ==(Object other) =>
      other is ViewportSize &&
      other.width == width &&
      other.height == height &&
      other.padding == padding &&
      other.includePlaces == includePlaces;

  @override
  int get hashCode => Object.hash(width, height, padding, includePlaces);
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

/// Whether this client shows the map now (app in the foreground, map on top).
/// Named for the message: Flutter's widgets library has a `Visibility` widget.
class VisibilityChange extends ClientMessage {
  const VisibilityChange(this.visible) : super('visibility');

  final bool visible;

  @override
  Json get data => {'visible': visible};
}

/// Adds a place: a circle ([PlaceAdd.circle]) or a polygon ([PlaceAdd.polygon]).
/// Also the body of `POST /api/sessions/{id}/places`.
class PlaceAdd extends ClientMessage {
  /// [radiusM] null: the server's default (50 m).
  const PlaceAdd.circle({required this.name, required this.kind, required GeoPoint this.center, this.radiusM})
      : ring = null,
        super('place_add');

  const PlaceAdd.polygon({required this.name, required this.kind, required List<GeoPoint> this.ring})
      : center = null,
        radiusM = null,
        super('place_add');

  final String name;
  final String kind;
  final GeoPoint? center;
  final double? radiusM;
  final List<GeoPoint>? ring;

  @override
  Json get data {
    final c = center;
    final r = ring;
    return {
      'name': name,
      'kind': kind,
      if (c != null) ...{'lat': c.lat, 'lng': c.lng, 'radius_m': radiusM},
      if (r != null) 'geometry': polygonGeoJson(r),
    };
  }
}

/// Removes a place (only its author, or the session's creator, may).
class PlaceRemove extends ClientMessage {
  const PlaceRemove(this.placeId) : super('place_remove');

  final String placeId;

  @override
  Json get data => {'place_id': placeId};
}

/// Sets ([status] one of [StatusKind]) or clears ([status] null) this device's
/// status, with an optional note of at most 80 characters.
class SetStatus extends ClientMessage {
  const SetStatus(this.status, {this.text}) : super('set_status');

  final String? status;
  final String? text;

  @override
  Json get data => {'status': status, 'text': status == null ? null : text};
}
