import 'dart:async';

import 'package:fake_async/fake_async.dart';
import 'package:flutter/widgets.dart' show AppLifecycleState;
import 'package:flutter_test/flutter_test.dart';
import 'package:geolocator/geolocator.dart' show Position;
import 'package:locshare_app/api/protocol.dart';
import 'package:locshare_app/state/pacing.dart';

Position fix(double lat, {double lng = 13.4}) => Position(
      latitude: lat,
      longitude: lng,
      timestamp: DateTime.utc(2026, 11, 20, 12),
      accuracy: 5,
      altitude: 0,
      altitudeAccuracy: 0,
      heading: 0,
      headingAccuracy: 0,
      speed: 0,
      speedAccuracy: 0,
    );

/// A location source driven by the test: every platform request is recorded
/// with its settings, and fixes are pushed by hand.
class FakeSource implements LocationSource {
  final requests = <LocationProfile>[];
  final _streams = <StreamController<Position>>[];
  Completer<Position>? pendingFix;
  int freshFixes = 0;

  StreamController<Position> get current => _streams.last;

  /// Platform requests still running (not cancelled).
  int get running => _streams.where((s) => s.hasListener).length;

  @override
  Stream<Position> watch(LocationProfile profile) {
    requests.add(profile);
    final controller = StreamController<Position>();
    _streams.add(controller);
    return controller.stream;
  }

  @override
  Future<Position> freshFix() {
    freshFixes++;
    return (pendingFix = Completer<Position>()).future;
  }
}

const base = Duration(seconds: 2);

void main() {
  late FakeSource source;
  late List<double> sent; // latitudes of the fixes sent, in order

  LocationPacer pacer({bool foreground = true, void Function()? onStopped}) => LocationPacer(
        source: source,
        send: (fix) {
          sent.add(fix.latitude);
          return true;
        },
        profile: LocationProfile.forReason(null, base),
        foreground: foreground,
        onStopped: onStopped,
      );

  setUp(() {
    source = FakeSource();
    sent = [];
  });

  group('settings per reason (README: "Location settings per reason")', () {
    test('the table', () {
      final table = {
        for (final reason in [
          PaceReason.watched,
          PaceReason.stationary,
          PaceReason.atPlace,
          PaceReason.nobodyWatching,
        ])
          reason: LocationProfile.forReason(reason, const Duration(seconds: 5)),
      };
      expect(table[PaceReason.watched]!.precision, FixPrecision.high);
      expect(table[PaceReason.watched]!.distanceFilterM, 0);
      expect(table[PaceReason.stationary]!.precision, FixPrecision.balanced);
      expect(table[PaceReason.stationary]!.distanceFilterM, inInclusiveRange(10, 20));
      expect(table[PaceReason.atPlace]!.precision, FixPrecision.balanced);
      expect(table[PaceReason.atPlace]!.distanceFilterM, 20);
      expect(table[PaceReason.nobodyWatching]!.precision, FixPrecision.lowPower);
      expect(table[PaceReason.nobodyWatching]!.distanceFilterM, 50);
      expect(table.values.map((p) => p.interval).toSet(), {const Duration(seconds: 5)},
          reason: 'the interval is the server\'s, not the table\'s');
    });

    test('before any update_interval: watched settings at the base interval', () {
      final profile = LocationProfile.forReason(null, base);
      expect([profile.reason, profile.precision, profile.interval], [PaceReason.watched, FixPrecision.high, base]);
    });

    test('a reason from a newer server gets the settings of the nearest known interval', () {
      expect(LocationProfile.forReason('sleeping', const Duration(seconds: 2)).precision, FixPrecision.high);
      expect(LocationProfile.forReason('sleeping', const Duration(seconds: 8)).reason, PaceReason.stationary);
      expect(LocationProfile.forReason('sleeping', const Duration(seconds: 15)).reason, PaceReason.atPlace);
      expect(LocationProfile.forReason('sleeping', const Duration(minutes: 2)).precision, FixPrecision.lowPower);
    });
  });

  group('LocationPacer', () {
    test('sends the latest fix at the base interval before any update_interval', () {
      fakeAsync((clock) {
        final p = pacer()..start();
        expect(source.requests.single.precision, FixPrecision.high);
        clock.elapse(const Duration(seconds: 1));
        expect(sent, isEmpty, reason: 'no fix yet: nothing to send');
        source.current.add(fix(1));
        clock.elapse(const Duration(seconds: 1)); // t = 2 s
        expect(sent, [1]);
        source.current
          ..add(fix(2))
          ..add(fix(3)); // only the latest one counts
        clock.elapse(const Duration(seconds: 2)); // t = 4 s
        expect(sent, [1, 3]);
        clock.elapse(const Duration(seconds: 4)); // standing still: the same fix again, so it stays fresh
        expect(sent, [1, 3, 3, 3]);
        p.close();
      });
    });

    test('update_interval: new interval, and new platform settings in the foreground', () {
      fakeAsync((clock) {
        final p = pacer()..start();
        source.current.add(fix(1));
        clock.flushMicrotasks();
        p.setPace(const Duration(seconds: 30), PaceReason.nobodyWatching);
        clock.flushMicrotasks();
        expect(source.requests.map((r) => r.reason), [PaceReason.watched, PaceReason.nobodyWatching]);
        expect(source.requests.last.precision, FixPrecision.lowPower);
        expect(source.requests.last.distanceFilterM, 50);
        expect(source.running, 1, reason: 'the old request was cancelled');
        expect(p.activeProfile, p.profile);
        clock.elapse(const Duration(seconds: 29));
        expect(sent, isEmpty, reason: 'the 2 s timer was replaced');
        clock.elapse(const Duration(seconds: 1));
        expect(sent, [1], reason: 'the latest fix survives a new request');
        p.close();
      });
    });

    test('the same pace again changes nothing', () {
      fakeAsync((clock) {
        final p = pacer()..start();
        p.setPace(base, null);
        p.setPace(base, PaceReason.watched);
        clock.flushMicrotasks();
        expect(source.requests, hasLength(1));
        p.close();
      });
    });

    test('in the background the running request stays; the new settings apply back in the foreground', () {
      fakeAsync((clock) {
        final p = pacer()..start();
        source.current.add(fix(1));
        p.setForeground(false);
        p.setPace(const Duration(seconds: 10), PaceReason.stationary);
        clock.flushMicrotasks();
        expect(source.requests, hasLength(1), reason: 'Android and iOS refuse to start location from the background');
        expect(p.activeProfile!.reason, PaceReason.watched);
        clock.elapse(const Duration(seconds: 10));
        expect(sent, [1], reason: 'the send interval follows at once');
        p.setForeground(true);
        clock.flushMicrotasks();
        expect(source.requests.map((r) => r.reason), [PaceReason.watched, PaceReason.stationary]);
        expect(source.running, 1);
        p.close();
      });
    });

    test('locate_now: one fresh fix, sent at once, then the interval goes on from there', () {
      fakeAsync((clock) {
        final p = pacer()..start();
        p.setPace(const Duration(seconds: 30), PaceReason.nobodyWatching); // timer: t = 30 s
        clock.flushMicrotasks();
        source.current.add(fix(1));
        clock.elapse(const Duration(seconds: 5));
        unawaited(p.locateNow());
        unawaited(p.locateNow()); // one request at a time
        expect(source.freshFixes, 1);
        source.pendingFix!.complete(fix(7));
        clock.flushMicrotasks();
        expect(sent, [7]);
        expect(p.latest!.latitude, 7);
        clock.elapse(const Duration(seconds: 29));
        expect(sent, [7]);
        clock.elapse(const Duration(seconds: 1));
        expect(sent, [7, 7]);
        p.close();
      });
    });

    test('locate_now without a fresh fix sends the latest one', () {
      fakeAsync((clock) {
        final p = pacer()..start();
        source.current.add(fix(1));
        clock.flushMicrotasks();
        unawaited(p.locateNow());
        source.pendingFix!.completeError(TimeoutException('no fix'));
        clock.flushMicrotasks();
        expect(sent, [1]);
        p.close();
      });
    });

    test('sendNow (after a reconnect) sends the latest fix at once', () {
      fakeAsync((clock) {
        final p = pacer()..start();
        p.sendNow();
        expect(sent, isEmpty);
        source.current.add(fix(4));
        clock.flushMicrotasks();
        p.sendNow();
        expect(sent, [4]);
        p.close();
      });
    });

    test('location turned off: the stream ends, nothing more is sent, the owner is told', () {
      fakeAsync((clock) {
        var stopped = 0;
        final p = pacer(onStopped: () => stopped++)..start();
        source.current.add(fix(1));
        clock.flushMicrotasks();
        unawaited(source.current.close());
        clock.elapse(const Duration(seconds: 10));
        expect(stopped, 1);
        expect(sent, isEmpty);
        expect(p.latest, isNull);
        p.close();
      });
    });

    test('a replaced request ending is not a stop', () {
      fakeAsync((clock) {
        var stopped = 0;
        final p = pacer(onStopped: () => stopped++)..start();
        final first = source.current;
        p.setPace(const Duration(seconds: 10), PaceReason.stationary);
        clock.flushMicrotasks();
        unawaited(first.close());
        clock.flushMicrotasks();
        expect(stopped, 0);
        p.close();
      });
    });

    test('close cancels the request and the timer', () {
      fakeAsync((clock) {
        final p = pacer()..start();
        source.current.add(fix(1));
        clock.flushMicrotasks();
        p.close();
        clock.elapse(const Duration(minutes: 1));
        expect(sent, isEmpty);
        expect(source.running, 0);
        expect(clock.pendingTimers, isEmpty);
      });
    });
  });

  group('VisibilityTracker', () {
    test('visible only in the foreground with the map on top', () {
      final tracker = VisibilityTracker();
      expect(tracker.visible, isFalse, reason: 'no map screen yet');
      expect(tracker.onMapOnTop(true), isTrue);
      expect(tracker.onMapOnTop(true), isNull, reason: 'no change, nothing to send');
      for (final state in [AppLifecycleState.inactive, AppLifecycleState.hidden, AppLifecycleState.paused]) {
        final tracker = VisibilityTracker(mapOnTop: true);
        expect(tracker.onLifecycle(state), isFalse, reason: '$state');
        expect(tracker.foreground, isFalse);
      }
    });

    test('each change once, in order', () {
      final tracker = VisibilityTracker(mapOnTop: true);
      final sentValues = [
        tracker.onLifecycle(AppLifecycleState.inactive),
        tracker.onLifecycle(AppLifecycleState.hidden),
        tracker.onLifecycle(AppLifecycleState.paused),
        tracker.onLifecycle(AppLifecycleState.resumed),
        tracker.onMapOnTop(false), // another screen on top (invite)
        tracker.onLifecycle(AppLifecycleState.paused),
        tracker.onLifecycle(AppLifecycleState.resumed),
        tracker.onMapOnTop(true),
      ];
      expect(sentValues, [false, null, null, true, false, null, null, true]);
    });
  });
}
