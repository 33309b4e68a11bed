import 'package:flutter_test/flutter_test.dart';
import 'package:locshare_app/api/protocol.dart';
import 'package:locshare_app/state/alerts.dart';
import 'package:locshare_app/state/session_reducer.dart';

import 'fixtures.dart';

/// Records what would have been shown instead of calling the plugin.
class FakeNotifications implements LocalNotifications {
  final shown = <Alert>[];
  int permissionRequests = 0;

  @override
  Future<void> requestPermission() async => permissionRequests++;

  @override
  Future<void> show(Alert alert) async => shown.add(alert);
}

void main() {
  late FakeNotifications notifications;
  late SessionAlerts alerts;
  late SessionView view;

  /// Feeds [text] through the alerts and the reducer, as the controller does.
  void receive(String text) {
    final message = ServerMessage.parse(text);
    alerts.onMessage(view, message);
    view = applyMessage(view, message);
  }

  setUp(() {
    notifications = FakeNotifications();
    alerts = SessionAlerts(notifications);
    view = const SessionView();
    receive(sessionState(
      participants: [
        participant(alice, 'Alice', location: location()),
        participant(bob, 'Bob', location: location(lat: 48.85, lng: 2.35)),
        participant(carol, 'Carol'),
      ],
      places: [circlePlace(), circlePlace(placeId: 'fuel', name: 'Fuel stop', kind: 'fuel')],
    ));
  });

  test('someone arriving at a meeting point', () {
    receive(frame('arrived', {'user_id': bob, 'place_id': campId}));
    expect(notifications.shown.single.title, 'Bob arrived');
    expect(notifications.shown.single.body, contains('Camp'));
  });

  test('no alert for other kinds of places, for myself, or for a repeat', () {
    receive(frame('arrived', {'user_id': bob, 'place_id': 'fuel'}));
    receive(frame('arrived', {'user_id': alice, 'place_id': campId})); // Alice is this device
    expect(notifications.shown, isEmpty);
    receive(frame('arrived', {'user_id': carol, 'place_id': campId}));
    receive(frame('arrived', {'user_id': carol, 'place_id': campId}));
    expect(notifications.shown, hasLength(1));
  });

  test('someone asking for help, with their last position', () {
    receive(frame('status', {
      'user_id': bob,
      'status': 'need_help',
      'text': 'Flat tyre',
      'at': '2026-11-20T12:05:00Z',
    }));
    final alert = notifications.shown.single;
    expect(alert.title, 'Bob needs help');
    expect(alert.body, contains('Flat tyre'));
    expect(alert.body, contains('48.85000, 2.35000'));
  });

  test('asking for help without a known position says so', () {
    receive(frame('status', {'user_id': carol, 'status': 'need_help', 'text': null, 'at': '2026-11-20T12:05:00Z'}));
    expect(notifications.shown.single.body, 'Position unknown.');
  });

  test('a new note while still asking for help does not alert again; asking again after clearing does', () {
    final help = {'user_id': bob, 'status': 'need_help', 'text': null, 'at': '2026-11-20T12:05:00Z'};
    receive(frame('status', help));
    receive(frame('status', {...help, 'text': 'Now at the bridge'}));
    expect(notifications.shown, hasLength(1));
    receive(frame('status', {'user_id': bob, 'status': null, 'text': null, 'at': null}));
    receive(frame('status', help));
    expect(notifications.shown, hasLength(2));
    expect(notifications.shown.first.id, notifications.shown.last.id, reason: 'the new one replaces the old');
  });

  test('other statuses, my own call for help and replayed state do not alert', () {
    receive(frame('status', {'user_id': bob, 'status': 'on_my_way', 'text': null, 'at': '2026-11-20T12:05:00Z'}));
    receive(frame('status', {'user_id': alice, 'status': 'need_help', 'text': null, 'at': '2026-11-20T12:05:00Z'}));
    receive(sessionState(
      participants: [participant(bob, 'Bob', status: statusJson('need_help'))],
      places: [circlePlace()],
      arrivals: [
        {'user_id': bob, 'place_id': campId},
      ],
    ));
    expect(notifications.shown, isEmpty);
  });

  test('alertFor is pure: the same input, the same alert', () {
    final message = ServerMessage.parse(frame('arrived', {'user_id': carol, 'place_id': campId}));
    expect(alertFor(view, message), alertFor(view, message));
    expect(notifications.shown, isEmpty);
  });
}
