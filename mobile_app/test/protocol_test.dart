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

    test('session_state with places, arrivals, a route, a convoy and statuses', () {
      final m = parsed<SessionState>(sessionState(
        participants: [
          participant(alice, 'Alice', location: location()),
          participant(bob, 'Bob', status: statusJson('need_help', text: 'Flat tyre')),
        ],
        places: [circlePlace(), polygonPlace()],
        arrivals: [
          {'user_id': alice, 'place_id': campId},
        ],
        route: routeJson,
        convoy: convoyJson,
      ));
      expect(m.places.map((p) => p.name), ['Camp', 'Lake']);
      expect(m.arrivals.single, const Arrival(alice, campId));
      expect(m.route!.points, 1200);
      expect(m.convoy!.order, [bob, alice, carol]);
      expect(m.participants.first.status, isNull);
      final help = m.participants.last.status!;
      expect([help.status, help.text, help.at], ['need_help', 'Flat tyre', DateTime.utc(2026, 11, 20, 12, 5)]);
      expect(m.participants.last.needsHelp, isTrue);
    });

    test('session_state from an older server (no places, arrivals, route, convoy, status)', () {
      final json = jsonDecode(sessionState()) as Map<String, Object?>;
      final data = json['data']! as Map<String, Object?>;
      for (final key in ['places', 'arrivals', 'route', 'convoy']) {
        data.remove(key);
      }
      for (final p in data['participants']! as List<Object?>) {
        (p! as Map<String, Object?>).remove('status');
      }
      final m = parsed<SessionState>(jsonEncode(json));
      expect([m.places, m.arrivals], [isEmpty, isEmpty]);
      expect([m.route, m.convoy], [null, null]);
      expect(m.participants.every((p) => p.status == null), isTrue);
    });

    test('update_interval', () {
      final m = parsed<UpdateInterval>(frame('update_interval', {'seconds': 30, 'reason': 'nobody_watching'}));
      expect([m.seconds, m.reason], [30.0, PaceReason.nobodyWatching]);
      expect(m.interval, const Duration(seconds: 30));
      expect(parsed<UpdateInterval>(frame('update_interval', {'seconds': 0.1, 'reason': 'watched'})).interval,
          const Duration(milliseconds: 500),
          reason: 'never faster than half a second');
    });

    test('locate_now and route_cleared have no fields', () {
      expect(parsed<LocateNow>(frame('locate_now')), isA<LocateNow>());
      expect(parsed<RouteCleared>(frame('route_cleared', {})), isA<RouteCleared>());
    });

    test('place_added: a circle', () {
      final place = parsed<PlaceAdded>(frame('place_added', circlePlace(radiusM: 120))).place;
      expect([place.placeId, place.name, place.kind, place.author], [campId, 'Camp', 'meet', alice]);
      expect(place.isCircle, isTrue);
      expect(place.center, const GeoPoint(52.52, 13.405), reason: 'GeoJSON is [lng, lat]');
      expect(place.radiusM, 120);
      expect(place.ring, isNull);
      expect(place.createdAt, DateTime.utc(2026, 11, 20, 12, 1));
      expect(place.anchor, place.center);
    });

    test('place_added: a polygon, by the creator (author null)', () {
      final place = parsed<PlaceAdded>(frame('place_added', polygonPlace(author: null))).place;
      expect(place.isCircle, isFalse);
      expect(place.author, isNull);
      expect(place.radiusM, isNull);
      expect(place.ring, hasLength(4), reason: 'the closing position is dropped');
      expect(place.ring!.first, const GeoPoint(52.0, 13.0));
      expect(place.anchor.lat, closeTo(52.1, 1e-9));
      expect(place.anchor.lng, closeTo(13.1, 1e-9));
    });

    test('a polygon across the antimeridian is anchored next to it, not at the other side of the world', () {
      final place = parsed<PlaceAdded>(frame('place_added', {
        ...polygonPlace(),
        'geometry': {
          'type': 'Polygon',
          'coordinates': [
            [
              [179.9, -16.0],
              [-179.9, -16.0],
              [-179.9, -16.2],
              [179.9, -16.2],
              [179.9, -16.0],
            ],
          ],
        },
      })).place;
      expect(place.anchor.lng.abs(), closeTo(180, 1e-9));
    });

    test('place_removed, arrived, departed', () {
      expect(parsed<PlaceRemoved>(frame('place_removed', {'place_id': campId})).placeId, campId);
      final arrived = parsed<Arrived>(frame('arrived', {'user_id': bob, 'place_id': campId}));
      expect([arrived.userId, arrived.placeId], [bob, campId]);
      final departed = parsed<Departed>(frame('departed', {'user_id': bob, 'place_id': campId}));
      expect(departed.arrival, arrived.arrival);
    });

    test('route_set across the antimeridian', () {
      final route = parsed<RouteSet>(frame('route_set', routeJson)).route;
      expect(route.line.first, const GeoPoint(-16.5, 179.8));
      expect([route.points, route.toleranceM, route.lengthM, route.offRouteM], [1200, 5.0, 61234.5, 200.0]);
      final lngs = unwrapLongitudes(route.line).map((p) => p.lng).toList();
      expect(lngs[0], closeTo(179.8, 1e-9));
      expect(lngs[1], closeTo(180.1, 1e-9), reason: 'one step east, not 359.7 degrees west');
      expect(lngs[2], closeTo(180.3, 1e-9));
      expect(normalizeLongitude(180.3), closeTo(-179.7, 1e-9));
      expect(normalizeLongitude(-180), -180);
    });

    test('convoy', () {
      final convoy = parsed<ConvoyMessage>(frame('convoy', convoyJson)).convoy;
      expect(convoy.order, [bob, alice, carol]);
      expect(convoy.gapsM, [350.0, 1200.5]);
      expect(convoy.gapsS, [45.0, null]);
      expect(convoy.offRouteDistance(carol), 420.0);
      expect(convoy.offRouteDistance(bob), isNull);
      final empty = parsed<ConvoyMessage>(frame('convoy', {'order': [], 'gaps_m': [], 'gaps_s': [], 'off_route': []}));
      expect(empty.convoy.order, isEmpty);
    });

    test('status: set and cleared', () {
      final changed = parsed<StatusMessage>(frame('status', {
        'user_id': bob,
        'status': 'on_my_way',
        'text': null,
        'at': '2026-11-20T12:05:00.000Z',
      }));
      expect([changed.userId, changed.status!.status, changed.status!.text], [bob, StatusKind.onMyWay, null]);
      final cleared = parsed<StatusMessage>(
        frame('status', {'user_id': bob, 'status': null, 'text': null, 'at': null}),
      );
      expect(cleared.status, isNull);
    });

    test('malformed issue 14 and 15 messages are refused', () {
      final broken = [
        frame('update_interval', {'seconds': '2', 'reason': 'watched'}),
        frame('update_interval', {'seconds': 2}),
        frame('place_added', {...circlePlace(), 'radius_m': null}), // a point needs a radius
        frame('place_added', {
          ...circlePlace(),
          'geometry': {'type': 'Point', 'coordinates': [13.4]},
        }),
        frame('place_added', {
          ...circlePlace(),
          'geometry': {'type': 'Point', 'coordinates': [13.4, 95.0]}, // latitude out of range
        }),
        frame('place_added', {
          ...polygonPlace(),
          'geometry': {
            'type': 'Polygon',
            'coordinates': [
              [
                [13.0, 52.0],
                [13.1, 52.0],
                [13.0, 52.0],
              ],
            ],
          },
        }),
        frame('place_added', {
          ...polygonPlace(),
          'geometry': {'type': 'MultiPolygon', 'coordinates': []},
        }),
        frame('place_added', {...circlePlace(), 'place_id': 7}),
        frame('place_removed', {}),
        frame('arrived', {'user_id': bob}),
        frame('departed', {'place_id': campId}),
        frame('route_set', {
          ...routeJson,
          'geometry': {
            'type': 'LineString',
            'coordinates': [
              [13.0, 52.0],
            ],
          },
        }),
        frame('route_set', {
          ...routeJson,
          'geometry': {'type': 'Point', 'coordinates': [13.0, 52.0]},
        }),
        frame('route_set', {...routeJson, 'length_m': null}),
        frame('convoy', {...convoyJson, 'gaps_m': [350.0]}), // one gap short
        frame('convoy', {...convoyJson, 'gaps_s': ['45', null]}),
        frame('convoy', {
          ...convoyJson,
          'off_route': [
            {'user_id': carol},
          ],
        }),
        frame('status', {'status': 'arrived'}),
        frame('status', {'user_id': bob, 'status': 3}),
        frame('status', {'user_id': bob, 'status': 'break', 'at': 'yesterday'}),
        sessionState(places: [
          {'place_id': campId},
        ]),
        sessionState(participants: [
          {...participant(alice, 'Alice'), 'status': 'need_help'},
        ]),
      ];
      for (final text in broken) {
        expect(() => ServerMessage.parse(text), throwsFormatException, reason: text);
      }
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

    test('visibility', () {
      expect(decoded(const VisibilityChange(false)), {
        'type': 'visibility',
        'data': {'visible': false},
      });
    });

    test('place_add: a circle', () {
      final m = PlaceAdd.circle(name: 'Camp', kind: PlaceKind.meet, center: const GeoPoint(52.52, 13.405), radiusM: 75);
      expect(decoded(m), {
        'type': 'place_add',
        'data': {'name': 'Camp', 'kind': 'meet', 'lat': 52.52, 'lng': 13.405, 'radius_m': 75.0},
      });
      final byDefault = PlaceAdd.circle(name: 'Camp', kind: PlaceKind.meet, center: const GeoPoint(1, 2));
      expect((decoded(byDefault)['data']! as Map<String, Object?>)['radius_m'], isNull, reason: "the server's 50 m");
    });

    test('place_add: a polygon is a closed GeoJSON ring', () {
      final m = PlaceAdd.polygon(name: 'Lake', kind: PlaceKind.poi, ring: const [
        GeoPoint(52.0, 13.0),
        GeoPoint(52.0, 13.2),
        GeoPoint(52.2, 13.2),
      ]);
      expect(decoded(m), {
        'type': 'place_add',
        'data': {
          'name': 'Lake',
          'kind': 'poi',
          'geometry': {
            'type': 'Polygon',
            'coordinates': [
              [
                [13.0, 52.0],
                [13.2, 52.0],
                [13.2, 52.2],
                [13.0, 52.0],
              ],
            ],
          },
        },
      });
    });

    test('a place sent is read back the same (round trip through place_added)', () {
      final sent = PlaceAdd.polygon(name: 'Lake', kind: PlaceKind.poi, ring: const [
        GeoPoint(52.0, 13.0),
        GeoPoint(52.0, 13.2),
        GeoPoint(52.2, 13.2),
      ]);
      final echoed = parsed<PlaceAdded>(frame('place_added', {
        ...sent.data,
        'place_id': lakeId,
        'author': alice,
        'radius_m': null,
        'created_at': '2026-11-20T12:02:00.000Z',
      })).place;
      expect(echoed.ring, sent.ring);
    });

    test('place_remove', () {
      expect(decoded(const PlaceRemove(campId)), {
        'type': 'place_remove',
        'data': {'place_id': campId},
      });
    });

    test('set_status, and clearing it', () {
      expect(decoded(const SetStatus(StatusKind.needHelp, text: 'Flat tyre')), {
        'type': 'set_status',
        'data': {'status': 'need_help', 'text': 'Flat tyre'},
      });
      expect(decoded(const SetStatus(null, text: 'ignored')), {
        'type': 'set_status',
        'data': {'status': null, 'text': null},
      });
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
