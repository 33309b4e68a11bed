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

  test('pong, error and unknown messages change nothing', () {
    for (final text in [
      frame('pong', {'server_time': '2026-11-20T12:00:00.000Z'}),
      frame('error', {'code': 'rate_limited', 'message': 'slow down'}),
      frame('from_the_future'),
    ]) {
      expect(identical(apply(start, text), start), isTrue);
    }
  });
}
