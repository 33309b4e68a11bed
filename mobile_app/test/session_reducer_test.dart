import 'package:flutter_test/flutter_test.dart';
import 'package:locshare_app/api/protocol.dart';
import 'package:locshare_app/state/session_reducer.dart';

import 'fixtures.dart';

SessionView apply(SessionView view, String text) => applyMessage(view, ServerMessage.parse(text));

void main() {
  final start = apply(const SessionView(), sessionState());

  test('session_state fills the view', () {
    expect(start.ready, isTrue);
    expect(start.participants.keys, unorderedEquals([alice, bob]));
    expect(start.me?.displayName, 'Alice');
    expect(start.viewport?.zoom, 12.34);
  });

  test('session_state replaces everything known before (reconnect)', () {
    var view = apply(start, frame('presence', {'user_id': bob, 'online': true}));
    view = view.copyWith(connection: ConnectionPhase.online);
    view = apply(view, sessionState(participants: [participant(alice, 'Alice')], hint: null));
    expect(view.participants.keys, [alice]);
    expect(view.participants[alice]!.location, isNull);
    expect(view.viewport, isNull);
    expect(view.connection, ConnectionPhase.online); // owned by the socket, not the server
  });

  test('participant_joined, presence, participant_left', () {
    var view = apply(start, frame('participant_joined', {
      'user_id': carol,
      'display_name': 'Carol',
      'avatar_color': '#4363D8',
      'joined_at': '2026-11-20T12:01:00.000Z',
      'online': false,
    }));
    expect(view.participants[carol]!.online, isFalse);
    view = apply(view, frame('presence', {'user_id': carol, 'online': true}));
    expect(view.participants[carol]!.online, isTrue);
    view = apply(view, frame('participant_left', {'user_id': carol, 'reason': 'left'}));
    expect(view.participants.containsKey(carol), isFalse);
    expect(start.participants.containsKey(carol), isFalse, reason: 'views are never mutated');
  });

  test('locations update positions; stale keeps the last one, greyed', () {
    var view = apply(start, frame('locations', {
      'updates': [location(userId: bob, lat: 48.85, lng: 2.35)],
    }));
    final bobNow = view.participants[bob]!;
    expect([bobNow.location!.lat, bobNow.stale], [48.85, false]);
    expect(view.participants[alice]!.location!.lat, 52.52);

    view = apply(view, frame('participant_stale', {'user_id': bob, 'last_seen': '2026-11-20T12:00:30.000Z'}));
    final bobStale = view.participants[bob]!;
    expect(bobStale.stale, isTrue);
    expect(bobStale.location!.lat, 48.85);
    expect(bobStale.lastSeen, DateTime.utc(2026, 11, 20, 12, 0, 30));

    view = apply(view, frame('locations', {'updates': [location(userId: bob)]}));
    expect(view.participants[bob]!.stale, isFalse);
  });

  test('messages about unknown participants change nothing', () {
    for (final text in [
      frame('presence', {'user_id': carol, 'online': true}),
      frame('participant_left', {'user_id': carol, 'reason': 'left'}),
      frame('participant_stale', {'user_id': carol, 'last_seen': '2026-11-20T12:00:30.000Z'}),
    ]) {
      expect(apply(start, text).participants.keys, unorderedEquals([alice, bob]));
    }
    final view = apply(start, frame('locations', {'updates': [location(userId: carol)]}));
    expect(view.participants.containsKey(carol), isFalse);
  });

  test('viewport and session_ended', () {
    var view = apply(start, frame('viewport', {...viewport, 'zoom': 15.5}));
    expect(view.viewport!.zoom, 15.5);
    view = apply(view, frame('session_ended', {'reason': 'inactive'}));
    expect(view.endedReason, 'inactive');
  });

  test('pong, error, locate_now and unknown messages change nothing', () {
    for (final text in [
      frame('pong', {'server_time': '2026-11-20T12:00:00.000Z'}),
      frame('error', {'code': 'rate_limited', 'message': 'slow down'}),
      frame('locate_now'), // a side effect (one fresh fix), handled by the controller
      frame('from_the_future'),
    ]) {
      expect(identical(apply(start, text), start), isTrue);
    }
  });

  group('issue 14: places, arrivals, route, convoy, status', () {
    final withPlaces = apply(
      const SessionView(),
      sessionState(
        places: [circlePlace(), polygonPlace()],
        arrivals: [
          {'user_id': alice, 'place_id': campId},
        ],
        route: routeJson,
        convoy: convoyJson,
      ),
    );

    test('session_state brings places, arrivals, route and convoy', () {
      expect(withPlaces.places.keys, [campId, lakeId]);
      expect(withPlaces.arrivals, {const Arrival(alice, campId)});
      expect(withPlaces.presentAt(campId).map((p) => p.displayName), ['Alice']);
      expect(withPlaces.presentAt(lakeId), isEmpty);
      expect(withPlaces.route!.lengthM, 61234.5);
      expect(withPlaces.convoy!.order, [bob, alice, carol]);
    });

    test('a new session_state replaces them all (reconnect)', () {
      final view = apply(withPlaces, sessionState());
      expect([view.places, view.arrivals], [isEmpty, isEmpty]);
      expect([view.route, view.convoy], [null, null]);
    });

    test('place_added and place_removed (with the arrivals there)', () {
      var view = apply(withPlaces, frame('place_added', circlePlace(placeId: 'p3', name: 'Fuel stop', kind: 'fuel')));
      expect(view.places.keys, [campId, lakeId, 'p3']);
      expect(view.places['p3']!.kind, PlaceKind.fuel);
      view = apply(view, frame('place_removed', {'place_id': campId}));
      expect(view.places.keys, [lakeId, 'p3']);
      expect(view.arrivals, isEmpty, reason: 'nobody is at a place that is gone');
      expect(identical(apply(view, frame('place_removed', {'place_id': campId})), view), isTrue);
      expect(withPlaces.places.keys, [campId, lakeId], reason: 'views are never mutated');
    });

    test('arrived and departed', () {
      var view = apply(withPlaces, frame('arrived', {'user_id': bob, 'place_id': lakeId}));
      expect(view.arrivals, {const Arrival(alice, campId), const Arrival(bob, lakeId)});
      expect(view.presentAt(lakeId).single.displayName, 'Bob');
      view = apply(view, frame('departed', {'user_id': alice, 'place_id': campId}));
      expect(view.arrivals, {const Arrival(bob, lakeId)});
      expect(identical(apply(view, frame('departed', {'user_id': alice, 'place_id': campId})), view), isTrue);
    });

    test('arrivals at unknown places or of unknown people are dropped', () {
      for (final text in [
        frame('arrived', {'user_id': bob, 'place_id': 'nowhere'}),
        frame('arrived', {'user_id': carol, 'place_id': campId}),
      ]) {
        expect(identical(apply(withPlaces, text), withPlaces), isTrue);
      }
    });

    test('someone who leaves is no longer at any place', () {
      final view = apply(withPlaces, frame('participant_left', {'user_id': alice, 'reason': 'left'}));
      expect(view.arrivals, isEmpty);
    });

    test('route_set replaces the route; route_cleared removes it and the convoy', () {
      var view = apply(start, frame('route_set', routeJson));
      expect(view.route!.points, 1200);
      expect(view.convoy, isNull);
      view = apply(view, frame('convoy', convoyJson));
      expect(view.convoy!.gapsM, [350.0, 1200.5]);
      view = apply(view, frame('route_set', {...routeJson, 'points': 2}));
      expect(view.route!.points, 2);
      expect(view.convoy, isNotNull, reason: 'the next convoy replaces it');
      view = apply(view, frame('route_cleared'));
      expect([view.route, view.convoy], [null, null]);
    });

    test('convoy replaces the previous one', () {
      final view = apply(withPlaces, frame('convoy', {
        'order': [alice],
        'gaps_m': [],
        'gaps_s': [],
        'off_route': [],
      }));
      expect(view.convoy!.order, [alice]);
      expect(view.convoy!.offRoute, isEmpty);
    });

    test('status: set, changed, cleared; shown per participant', () {
      var view = apply(start, frame('status', {
        'user_id': bob,
        'status': 'need_help',
        'text': 'Flat tyre',
        'at': '2026-11-20T12:05:00.000Z',
      }));
      expect(view.participants[bob]!.status!.text, 'Flat tyre');
      expect(view.needingHelp.map((p) => p.userId), [bob]);
      view = apply(
        view,
        frame('status', {'user_id': bob, 'status': 'break', 'text': null, 'at': '2026-11-20T12:06:00Z'}),
      );
      expect(view.participants[bob]!.status!.status, StatusKind.onBreak);
      expect(view.needingHelp, isEmpty);
      view = apply(view, frame('status', {'user_id': bob, 'status': null, 'text': null, 'at': null}));
      expect(view.participants[bob]!.status, isNull);
      expect(view.participants[bob]!.location, start.participants[bob]!.location, reason: 'nothing else changes');
    });

    test('a status of someone unknown changes nothing', () {
      final text = frame('status', {'user_id': carol, 'status': 'arrived', 'text': null, 'at': '2026-11-20T12:05:00Z'});
      expect(identical(apply(start, text), start), isTrue);
    });

    test('statuses survive location updates and presence changes', () {
      var view = apply(start, frame('status', {'user_id': bob, 'status': 'on_my_way', 'text': null, 'at': null}));
      view = apply(view, frame('locations', {'updates': [location(userId: bob)]}));
      view = apply(view, frame('presence', {'user_id': bob, 'online': true}));
      expect(view.participants[bob]!.status!.status, StatusKind.onMyWay);
    });

    test('refused places and statuses become notices; each one a new notice', () {
      var view = apply(start, frame('error', {'code': 'invalid_place', 'message': 'radius_m: at most 2000'}));
      final first = view.notice!;
      expect([first.code, first.message], ['invalid_place', 'radius_m: at most 2000']);
      view = apply(view, frame('error', {'code': 'invalid_place', 'message': 'radius_m: at most 2000'}));
      expect(view.notice!.seq, greaterThan(first.seq));
      view = apply(view, frame('error', {'code': 'forbidden', 'message': 'not your place'}));
      expect(view.notice!.code, 'forbidden');
      view = apply(view, frame('error', {'code': 'invalid_status', 'message': 'note too long'}));
      expect(view.notice!.message, 'note too long');
    });
  });

  group('issue 15: pacing', () {
    test('before any update_interval, the base interval of session_state.limits', () {
      expect(start.pace, isNull);
      expect(start.sendInterval, const Duration(seconds: 2));
    });

    test('update_interval sets the interval and its reason', () {
      final view = apply(start, frame('update_interval', {'seconds': 30, 'reason': 'nobody_watching'}));
      expect(view.sendInterval, const Duration(seconds: 30));
      expect(view.pace!.reason, PaceReason.nobodyWatching);
    });

    test('the pace survives a session_state (an update_interval follows it anyway)', () {
      var view = apply(start, frame('update_interval', {'seconds': 10, 'reason': 'stationary'}));
      view = apply(view, sessionState());
      expect(view.sendInterval, const Duration(seconds: 10));
    });
  });
}
