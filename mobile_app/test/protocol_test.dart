import 'dart:convert';

import 'package:flutter_test/flutter_test.dart';
import 'package:locshare_app/api/protocol.dart';

import 'fixtures.dart';

T parsed<T extends ServerMessage>(String text) {
  final message = ServerMessage.parse(text);
  expect(message, isA<T>());
  return message as T;
}

void main() {
  group('server messages', () {
    test('session_state', () {
      final m = parsed<SessionState>(sessionState());
      expect(m.session.name, 'Saturday hike');
      expect(m.session.maxParticipants, 50);
      expect(m.session.expiresAt, DateTime.utc(2026, 11, 20, 17));
      expect(m.you.userId, alice);
      expect(m.participants.map((p) => p.displayName), ['Alice', 'Bob']);
      final a = m.participants.first;
      expect(a.online && !a.stale, isTrue);
      expect(a.location!.lat, 52.52);
      expect(a.location!.accuracy, 12.5);
      expect(a.location!.heading, isNull);
      expect(a.location!.timestamp.microsecond, 456);
      expect(m.participants.last.location, isNull);
      expect(m.viewport!.zoom, 12.34);
      expect(m.limits.updateInterval, const Duration(seconds: 2));
      expect(m.limits.maxMessageBytes, 16384);
    });

    test('session_state without a viewport (nobody sharing)', () {
      expect(parsed<SessionState>(sessionState(hint: null)).viewport, isNull);
    });

    test('participant_joined', () {
      final m = parsed<ParticipantJoined>(frame('participant_joined', {
        'user_id': carol,
        'display_name': 'Carol',
        'avatar_color': '#3CB44B',
        'joined_at': '2026-11-20T12:01:00.000Z',
        'online': false,
      }));
      expect([m.userId, m.displayName, m.avatarColor, m.online], [carol, 'Carol', '#3CB44B', false]);
    });

    test('participant_left', () {
      final m = parsed<ParticipantLeft>(frame('participant_left', {'user_id': bob, 'reason': 'removed'}));
      expect([m.userId, m.reason], [bob, 'removed']);
    });

    test('presence', () {
      final m = parsed<Presence>(frame('presence', {'user_id': bob, 'online': true}));
      expect([m.userId, m.online], [bob, true]);
    });

    test('locations', () {
      final m = parsed<Locations>(frame('locations', {
        'updates': [location(userId: bob, lat: -33.9, lng: 151.2, accuracy: null)],
      }));
      final u = m.updates.single;
      expect([u.userId, u.lat, u.lng, u.accuracy, u.speed], [bob, -33.9, 151.2, null, 1.2]);
    });

    test('locations entries need a user_id', () {
      expect(() => ServerMessage.parse(frame('locations', {'updates': [location()]})), throwsFormatException);
    });

    test('participant_stale', () {
      final m = parsed<ParticipantStale>(
        frame('participant_stale', {'user_id': bob, 'last_seen': '2026-11-20T12:00:00.000Z'}),
      );
      expect(m.lastSeen, DateTime.utc(2026, 11, 20, 12));
    });

    test('viewport, including an antimeridian box', () {
      final m = parsed<ViewportMessage>(frame('viewport', {
        ...viewport,
        'bbox': {'west': 179.5, 'south': -17, 'east': -179.5, 'north': -16},
      }));
      expect(m.hint.bbox.west > m.hint.bbox.east, isTrue);
      expect([m.hint.centerLat, m.hint.centerLng, m.hint.zoom], [52.55, 13.4, 12.34]);
      expect(m.hint.participants, [alice, bob]);
    });

    test('pong', () {
      final m = parsed<Pong>(frame('pong', {'server_time': '2026-11-20T12:00:00.000Z', 'id': 7}));
      expect(m.serverTime.isUtc, isTrue);
      expect(m.id, 7);
    });

    test('session_ended', () {
      expect(parsed<SessionEnded>(frame('session_ended', {'reason': 'expired'})).reason, 'expired');
    });

    test('error', () {
      final m = parsed<ServerError>(frame('error', {'code': 'invalid_location', 'message': "'lat' is required"}));
      expect([m.code, m.message], ['invalid_location', "'lat' is required"]);
    });

    test('unknown types and fields are ignored, broken frames refused', () {
      expect(parsed<UnknownMessage>(frame('from_the_future', {'x': 1})).type, 'from_the_future');
      expect(parsed<Presence>(frame('presence', {'user_id': bob, 'online': true, 'new': 1})).online, isTrue);
      expect(ServerMessage.tryParse('not json'), isNull);
      expect(ServerMessage.tryParse('[1]'), isNull);
      expect(ServerMessage.tryParse(frame('presence', {'user_id': bob})), isNull);
      expect(ServerMessage.tryParse(frame('session_ended', {'reason': 4})), isNull);
    });
  });

  group('client messages', () {
    Map<String, Object?> decoded(ClientMessage m) => jsonDecode(m.encode()) as Map<String, Object?>;

    test('location_update', () {
      final m = LocationUpdate(
        lat: 52.5,
        lng: 13.4,
        accuracy: 5,
        heading: 90,
        speed: 0,
        timestamp: DateTime.utc(2026, 11, 20, 12, 0, 0, 123),
      );
      expect(decoded(m), {
        'type': 'location_update',
        'data': {
          'lat': 52.5,
          'lng': 13.4,
          'accuracy': 5.0,
          'heading': 90.0,
          'speed': 0.0,
          'timestamp': '2026-11-20T12:00:00.123Z',
        },
      });
    });

    test('fixes drop values the server would refuse', () {
      final m = LocationUpdate.fromFix(10, 20, accuracy: -1, heading: -1, speed: double.nan)!;
      expect([m.accuracy, m.heading, m.speed], [null, null, null]);
      expect(LocationUpdate.fromFix(91, 0), isNull);
      expect(LocationUpdate.fromFix(0, double.infinity), isNull);
    });

    test('viewport_size fits the server bounds', () {
      expect(decoded(ViewportSize.forScreen(392.7, 759.3)), {
        'type': 'viewport_size',
        'data': {'width': 393, 'height': 759, 'padding': 48},
      });
      final tiny = ViewportSize.forScreen(10, 90);
      expect([tiny.width, tiny.height], [64, 90]);
      expect(2 * tiny.padding, lessThan(64));
      expect(ViewportSize.forScreen(20000, double.infinity).width, 16384);
      expect(ViewportSize.forScreen(400, 800), ViewportSize.forScreen(400.2, 799.8));
    });

    test('ping and leave have no data', () {
      expect(decoded(const Ping()), {'type': 'ping'});
      expect(decoded(const Ping('rtt-1')), {
        'type': 'ping',
        'data': {'id': 'rtt-1'},
      });
      expect(decoded(const Leave()), {'type': 'leave'});
    });
  });
}
