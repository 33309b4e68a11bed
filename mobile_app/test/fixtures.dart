// Server frames as docs/protocol.md shows them, shared by the tests.
import 'dart:convert';

const alice = 'a1a1a1a1-0000-4000-8000-000000000001';
const bob = 'b2b2b2b2-0000-4000-8000-000000000002';
const carol = 'c3c3c3c3-0000-4000-8000-000000000003';

String frame(String type, [Map<String, Object?>? data]) =>
    jsonEncode({'type': type, if (data != null) 'data': data});

Map<String, Object?> location({String? userId, double lat = 52.52, double lng = 13.405, double? accuracy = 12.5}) => {
      if (userId != null) 'user_id': userId,
      'lat': lat,
      'lng': lng,
      'accuracy': accuracy,
      'heading': null,
      'speed': 1.2,
      'timestamp': '2026-11-20T12:00:00.123456Z',
    };

Map<String, Object?> participant(String userId, String name,
        {bool online = true, bool stale = false, Map<String, Object?>? location, Map<String, Object?>? status}) =>
    {
      'user_id': userId,
      'display_name': name,
      'avatar_color': '#E6194B',
      'joined_at': '2026-11-20T11:00:00.000Z',
      'online': online,
      'last_seen': '2026-11-20T11:59:30.000Z',
      'stale': stale,
      'location': location,
      'status': status,
    };

Map<String, Object?> statusJson(String? status, {String? text}) => {
      'status': status,
      'text': text,
      'at': status == null ? null : '2026-11-20T12:05:00.000Z',
    };

const campId = '9a9a9a9a-0000-4000-8000-0000000000a1';
const lakeId = '9a9a9a9a-0000-4000-8000-0000000000a2';

/// A circle place (a GeoJSON Point with a radius), as `place_added` carries it.
Map<String, Object?> circlePlace({
  String placeId = campId,
  String name = 'Camp',
  String kind = 'meet',
  String? author = alice,
  double lat = 52.52,
  double lng = 13.405,
  double radiusM = 50,
}) =>
    {
      'place_id': placeId,
      'name': name,
      'kind': kind,
      'author': author,
      'geometry': {
        'type': 'Point',
        'coordinates': [lng, lat],
      },
      'radius_m': radiusM,
      'created_at': '2026-11-20T12:01:00.000Z',
    };

/// A polygon place; its ring is closed, as GeoJSON requires.
Map<String, Object?> polygonPlace({String placeId = lakeId, String name = 'Lake', String? author = bob}) => {
      'place_id': placeId,
      'name': name,
      'kind': 'poi',
      'author': author,
      'geometry': {
        'type': 'Polygon',
        'coordinates': [
          [
            [13.0, 52.0],
            [13.2, 52.0],
            [13.2, 52.2],
            [13.0, 52.2],
            [13.0, 52.0],
          ],
        ],
      },
      'radius_m': null,
      'created_at': '2026-11-20T12:02:00.000Z',
    };

/// A route crossing the antimeridian (Fiji), as `route_set` carries it.
const routeJson = {
  'geometry': {
    'type': 'LineString',
    'coordinates': [
      [179.8, -16.5],
      [-179.9, -16.6],
      [-179.7, -16.7],
    ],
  },
  'points': 1200,
  'tolerance_m': 5.0,
  'length_m': 61234.5,
  'off_route_m': 200,
};

const convoyJson = {
  'order': [bob, alice, carol],
  'gaps_m': [350.0, 1200.5],
  'gaps_s': [45.0, null],
  'off_route': [
    {'user_id': carol, 'distance_m': 420.0},
  ],
};

const viewport = {
  'bbox': {'west': 13.3, 'south': 52.5, 'east': 13.5, 'north': 52.6},
  'center': {'lat': 52.55, 'lng': 13.4},
  'zoom': 12.34,
  'participants': [alice, bob],
};

String sessionState({
  List<Map<String, Object?>>? participants,
  Map<String, Object?>? hint = viewport,
  List<Map<String, Object?>> places = const [],
  List<Map<String, Object?>> arrivals = const [],
  Map<String, Object?>? route,
  Map<String, Object?>? convoy,
}) =>
    frame('session_state', {
      'session': {
        'id': '5e55e55e-0000-4000-8000-00000000000f',
        'name': 'Saturday hike',
        'created_at': '2026-11-20T11:00:00.000Z',
        'expires_at': '2026-11-20T17:00:00.000Z',
        'max_participants': 50,
      },
      'you': {'user_id': alice, 'display_name': 'Alice', 'avatar_color': '#E6194B'},
      'participants': participants ??
          [
            participant(alice, 'Alice', location: location()),
            participant(bob, 'Bob', online: false),
          ],
      'viewport': hint,
      'limits': {
        'location_ttl_s': 30,
        'update_interval_s': 2,
        'flush_interval_ms': 100,
        'max_messages_per_s': 10,
        'max_message_bytes': 16384,
      },
      'places': places,
      'arrivals': arrivals,
      'route': route,
      'convoy': convoy,
    });
