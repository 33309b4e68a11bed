// Pacing (issue 15): how often this device sends its position and with which
// platform settings, following the server's `update_interval`; one fresh fix on
// `locate_now`; and `visibility`, whether this device shows the map.
//
// No platform calls here: fixes come from a [LocationSource] (geolocator on a
// device, a fake in tests), and messages leave through callbacks.
import 'dart:async';

import 'package:flutter/foundation.dart' show immutable;
import 'package:flutter/widgets.dart' show AppLifecycleState;
import 'package:geolocator/geolocator.dart' show Position;

import '../api/protocol.dart';

/// How hard the platform should try for a fix (mapped to geolocator's
/// `LocationAccuracy` in location.dart).
enum FixPrecision {
  /// GPS: Android PRIORITY_HIGH_ACCURACY, iOS kCLLocationAccuracyNearestTenMeters.
  high,

  /// Wi-Fi and cell, GPS rarely: Android PRIORITY_BALANCED_POWER_ACCURACY, iOS
  /// kCLLocationAccuracyHundredMeters.
  balanced,

  /// Mostly cell: Android PRIORITY_LOW_POWER, iOS kCLLocationAccuracyKilometer.
  lowPower,
}

/// The platform's location request for one `update_interval` reason. The table
/// is in README.md ("Location settings per reason"); keep the two in step.
@immutable
class LocationProfile {
  const LocationProfile({
    required this.reason,
    required this.precision,
    required this.distanceFilterM,
    required this.interval,
  });

  /// [reason] null: no `update_interval` yet, so the base interval from
  /// `session_state.limits` applies, which is what a watched, moving client gets.
  /// A reason this app does not know is treated like the known one whose default
  /// interval is the nearest at or above [interval].
  factory LocationProfile.forReason(String? reason, Duration interval) {
    final String known;
    if (reason == null) {
      known = PaceReason.watched;
    } else if (_reasons.contains(reason)) {
      known = reason;
    } else if (interval <= const Duration(seconds: 2)) {
      known = PaceReason.watched;
    } else if (interval <= const Duration(seconds: 10)) {
      known = PaceReason.stationary;
    } else if (interval <= const Duration(seconds: 15)) {
      known = PaceReason.atPlace;
    } else {
      known = PaceReason.nobodyWatching;
    }
    return switch (known) {
      PaceReason.watched =>
        LocationProfile(reason: known, precision: FixPrecision.high, distanceFilterM: 0, interval: interval),
      PaceReason.stationary =>
        LocationProfile(reason: known, precision: FixPrecision.balanced, distanceFilterM: 15, interval: interval),
      PaceReason.atPlace =>
        LocationProfile(reason: known, precision: FixPrecision.balanced, distanceFilterM: 20, interval: interval),
      _ => LocationProfile(reason: known, precision: FixPrecision.lowPower, distanceFilterM: 50, interval: interval),
    };
  }

  static const _reasons = {
    PaceReason.watched,
    PaceReason.stationary,
    PaceReason.atPlace,
    PaceReason.nobodyWatching,
  };

  /// The reason whose settings these are.
  final String reason;
  final FixPrecision precision;

  /// Metres the device must move before the platform reports a new fix (0: any).
  final int distanceFilterM;

  /// The send interval; also Android's requested fix interval (iOS has none).
  final Duration interval;

  /// Whether a running platform request has to be replaced to get these settings.
  bool sameRequestAs(LocationProfile other) =>
      precision == other.precision && distanceFilterM == other.distanceFilterM && interval == other.interval;

  @override
  bool operator ==(Object other) => other is LocationProfile && other.reason == reason && sameRequestAs(other);

  @override
  int get hashCode => Object.hash(reason, precision, distanceFilterM, interval);

  @override
  String toString() => 'LocationProfile($reason, $precision, ${distanceFilterM}m, $interval)';
}

/// Where fixes come from.
abstract interface class LocationSource {
  /// Fixes with [profile]'s platform settings until the subscription is cancelled.
  Stream<Position> watch(LocationProfile profile);

  /// One fresh, high-accuracy fix (for `locate_now`); may fail or time out.
  Future<Position> freshFix();
}

/// Sends this device's position at the server's pace.
///
/// Rules:
///  1. Only the latest fix is kept; every [interval] it is sent again (if the
///     socket is open; nothing is queued), so a device standing still behind a
///     distance filter does not go stale on the server.
///  2. A new pace (`update_interval`, or the base interval of a `session_state`)
///     restarts the send timer and, when its platform settings differ, the
///     platform request, but only while the app is in the foreground: Android 12+
///     refuses to start a location foreground service from the background, and
///     iOS does not start location updates from the background with "while in
///     use" permission. In the background the running request stays (only the
///     send interval follows); the latest settings apply on the next return to
///     the foreground.
///  3. `locate_now` gets one fresh fix, sent at once; if none comes (no fix in
///     time, or iOS in the background), the latest fix is sent instead. One
///     request at a time.
class LocationPacer {
  LocationPacer({
    required LocationSource source,
    required bool Function(Position fix) send,
    required LocationProfile profile,
    bool foreground = true,
    void Function()? onStopped,
  })  : _source = source,
        _send = send,
        _wanted = profile,
        _foreground = foreground,
        _onStopped = onStopped;

  final LocationSource _source;
  final bool Function(Position fix) _send;
  final void Function()? _onStopped;
  LocationProfile _wanted;
  LocationProfile? _active; // the settings of the running platform request
  StreamSubscription<Position>? _fixes;
  Timer? _timer;
  Position? _latest;
  bool _foreground;
  bool _locating = false;
  bool _started = false;
  bool _closed = false;
  int _generation = 0; // of platform requests: a late restart must not undo a newer one

  /// The latest fix, for "Center on me" before the server echoed it.
  Position? get latest => _latest;

  /// What the server asks for now.
  LocationProfile get profile => _wanted;

  /// The settings of the running platform request (null: none running).
  LocationProfile? get activeProfile => _active;

  Duration get interval => _wanted.interval;

  /// Starts the platform request and the send timer.
  void start() {
    if (_started || _closed) return;
    _started = true;
    _listen();
    _restartTimer();
  }

  /// A new pace: [reason] null for the base interval of `session_state.limits`.
  void setPace(Duration interval, String? reason) {
    final next = LocationProfile.forReason(reason, interval);
    if (next == _wanted) return;
    final timerChanged = next.interval != _wanted.interval;
    _wanted = next;
    if (timerChanged && _started) _restartTimer();
    _applyProfile();
  }

  /// The app came to the foreground (true) or left it (false).
  void setForeground(bool foreground) {
    _foreground = foreground;
    _applyProfile();
  }

  /// Sends the latest fix now and counts the interval from here (after a
  /// (re)connect: the latest position at once, nothing older).
  void sendNow() {
    _sendLatest();
    if (_started) _restartTimer();
  }

  /// `locate_now`: one fresh fix, sent at once (rule 3).
  Future<void> locateNow() async {
    if (_locating || _closed || !_started) return;
    _locating = true;
    try {
      final fix = await _source.freshFix();
      if (_closed) return;
      _latest = fix;
    } on Object {
      // No fresh fix: the latest one is the best answer there is.
    } finally {
      _locating = false;
    }
    if (!_closed) sendNow();
  }

  void close() {
    if (_closed) return;
    _closed = true;
    _timer?.cancel();
    unawaited(_fixes?.cancel());
    _fixes = null;
    _active = null;
    _latest = null;
  }

  void _sendLatest() {
    final fix = _latest;
    if (fix != null && !_closed) _send(fix);
  }

  void _restartTimer() {
    _timer?.cancel();
    _timer = Timer.periodic(_wanted.interval, (_) => _sendLatest());
  }

  void _applyProfile() {
    final active = _active;
    if (!_started || _closed || !_foreground || active == null || active.sameRequestAs(_wanted)) return;
    unawaited(_restart());
  }

  Future<void> _restart() async {
    final generation = ++_generation;
    final old = _fixes;
    _fixes = null;
    _active = null;
    // The platform stream is a singleton (geolocator): the old request must be
    // gone before a new one with other settings can start.
    await old?.cancel();
    if (!_closed && generation == _generation) _listen();
  }

  void _listen() {
    final profile = _wanted;
    final generation = _generation;
    _active = profile;
    _fixes = _source.watch(profile).listen(
      (fix) => _latest = fix,
      // Location turned off or permission revoked: stop rather than repeat an old fix.
      onError: (Object _) => _latest = null,
      onDone: () {
        if (_closed || generation != _generation) return; // replaced on purpose
        _fixes = null;
        _active = null;
        _latest = null;
        _timer?.cancel();
        _started = false;
        _onStopped?.call();
      },
    );
  }
}

/// Whether this device shows the map: the app is in the foreground (`resumed`;
/// `inactive`, `hidden` and `paused` are not) and the map screen is on top.
///
/// The owner sends `visibility` with every value [onLifecycle] and [onMapOnTop]
/// return (a change), and [visible] right after each (re)connect: a connection
/// that never says counts as visible.
class VisibilityTracker {
  VisibilityTracker({AppLifecycleState lifecycle = AppLifecycleState.resumed, bool mapOnTop = false})
      : _lifecycle = lifecycle,
        _mapOnTop = mapOnTop;

  AppLifecycleState _lifecycle;
  bool _mapOnTop;

  AppLifecycleState get lifecycle => _lifecycle;

  bool get foreground => _lifecycle == AppLifecycleState.resumed;

  bool get visible => foreground && _mapOnTop;

  /// The new value to send, or null if it did not change.
  bool? onLifecycle(AppLifecycleState lifecycle) => _change(() => _lifecycle = lifecycle);

  /// The new value to send, or null if it did not change.
  bool? onMapOnTop(bool onTop) => _change(() => _mapOnTop = onTop);

  bool? _change(void Function() update) {
    final before = visible;
    update();
    return visible == before ? null : visible;
  }
}
