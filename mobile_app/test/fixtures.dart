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
        {bool online = true, bool stale = false, Map<String, Object?>? location}) =>
    {
      'user_id': userId,
      'display_name': name,
      'avatar_color': '#E6194B',
      'joined_at': '2026-11-20T11:00:00.000Z',
      'online': online,
      'last_seen': '2026-11-20T11:59:30.000Z',
      'stale': stale,
      'location': location,
    };

const viewport = {
  'bbox': {'west': 13.3, 'south': 52.5, 'east': 13.5, 'north': 52.6},
  'center': {'lat': 52.55, 'lng': 13.4},
  'zoom': 12.34,
  'participants': [alice, bob],
};

String sessionState({List<Map<String, Object?>>? participants, Map<String, Object?>? hint = viewport}) =>
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
    });
