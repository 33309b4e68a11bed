// Riverpod wiring: the REST client, the session this device is in, and the
// controller that owns its WebSocket, its location pacing and its alerts.
import 'dart:async';

import 'package:flutter/widgets.dart' show AppLifecycleState;
import 'package:flutter_riverpod/flutter_riverpod.dart';
import 'package:geolocator/geolocator.dart' show Position;

import '../api/protocol.dart';
import '../api/rest_client.dart';
import '../api/ws_client.dart';
import '../config.dart';
import 'alerts.dart';
import 'location.dart';
import 'pacing.dart';
import 'session_reducer.dart';

final restClientProvider = Provider<RestClient>((ref) {
  final client = RestClient(ref.watch(configProvider).apiBase);
  ref.onDispose(client.close);
  return client;
});

final sessionDetailsProvider = FutureProvider.autoDispose.family<SessionDetails, String>(
  (ref, sessionId) => ref.watch(restClientProvider).getSession(sessionId),
);

/// This device's place in a session: the join answer and the link to invite
/// others with.
class ActiveSession {
  const ActiveSession({required this.joined, required this.joinLink});

  final JoinedSession joined;
  final String joinLink;
}

class ActiveSessionNotifier extends Notifier<ActiveSession?> {
  @override
  ActiveSession? build() => null;

  void set(ActiveSession? session) => state = session;
}

final activeSessionProvider =
    NotifierProvider<ActiveSessionNotifier, ActiveSession?>(ActiveSessionNotifier.new);

/// Overridable in tests; the real one is geolocator.
final locationSourceProvider = Provider<LocationSource>((ref) => const GeolocatorSource());

/// Overridable in tests; the real one is flutter_local_notifications.
final localNotificationsProvider = Provider<LocalNotifications>((ref) => PluginNotifications());

final sessionControllerProvider =
    NotifierProvider<SessionController, SessionView>(SessionController.new);

class SessionController extends Notifier<SessionView> {
  ActiveSession? _active;
  SessionSocket? _socket;
  StreamSubscription<SocketEvent>? _events;
  LocationPacer? _pacer;
  ViewportSize? _viewportSize;
  Timer? _viewportTimer;
  SessionAlerts? _alerts;
  // Outlives sessions: the app's lifecycle and whether the map is on top are
  // known before a session starts and after it ends.
  final _visibility = VisibilityTracker();
  Object? _mapScreen; // the map screen on top, if any

  @override
  SessionView build() {
    final active = ref.watch(activeSessionProvider);
    ref.onDispose(_teardown);
    _active = active;
    if (active == null) return const SessionView();
    _alerts = SessionAlerts(ref.read(localNotificationsProvider));
    final socket = SessionSocket(active.joined.socketUri(ref.read(configProvider).apiBase));
    _socket = socket;
    _events = socket.events.listen(_onEvent);
    socket.start();
    return const SessionView();
  }

  /// This device's latest fix, for "Center on me" before the server echoed it.
  Position? get lastFix => _pacer?.latest;

  /// Starts sending this device's location, if the user allowed it.
  Future<void> startSharing() async {
    final active = _active;
    if (active == null || _pacer != null || state.stopped != null) return;
    if (await checkLocationAccess() != LocationAccess.granted) return;
    if (!identical(active, _active) || _pacer != null) return;
    late final LocationPacer pacer;
    pacer = LocationPacer(
      source: ref.read(locationSourceProvider),
      send: _sendFix,
      profile: LocationProfile.forReason(state.pace?.reason, state.sendInterval),
      foreground: _visibility.foreground,
      onStopped: () {
        // Location turned off or permission revoked.
        if (!identical(pacer, _pacer)) return;
        pacer.close();
        _pacer = null;
        if (identical(active, _active)) state = state.copyWith(sharing: false);
      },
    );
    _pacer = pacer;
    pacer.start();
    state = state.copyWith(sharing: true);
  }

  /// The map's size in logical pixels; sent now and after every reconnect.
  void setViewportSize(double width, double height) {
    // includePlaces: the server's fit covers the places too (where the group goes).
    final size = ViewportSize.forScreen(width, height, includePlaces: true);
    if (size == _viewportSize) return;
    _viewportSize = size;
    _viewportTimer?.cancel();
    // A rotation animates through many sizes; only the last one matters.
    _viewportTimer = Timer(const Duration(milliseconds: 300), _sendViewportSize);
  }

  /// The app came back to the foreground: do not wait out the backoff.
  void onResumed() => _socket?.reconnectNow();

  /// The app's lifecycle (from the app shell): decides `visibility`, and whether
  /// the platform location request may be replaced (foreground only).
  void setAppLifecycle(AppLifecycleState lifecycle) {
    _sendVisibility(_visibility.onLifecycle(lifecycle));
    _pacer?.setForeground(_visibility.foreground);
  }

  /// Whether [screen] (a map screen) is the top page, not covered by another one.
  /// Only the screen that last said it was on top can take that back: an old map
  /// screen disposed after a new one appeared must not hide the new one.
  void setMapOnTop(Object screen, bool onTop) {
    if (onTop) {
      _mapScreen = screen;
    } else if (identical(_mapScreen, screen)) {
      _mapScreen = null;
    } else {
      return;
    }
    _sendVisibility(_visibility.onMapOnTop(onTop));
  }

  /// Sends [message] now; false while offline (nothing is queued).
  bool send(ClientMessage message) => _socket?.send(message) ?? false;

  /// Leaves for good: `leave` over the socket, or REST DELETE when offline.
  Future<void> leave() async {
    final active = _active;
    if (active == null) return;
    final socket = _socket;
    var left = false;
    if (socket != null && socket.isOpen) {
      final closed = socket.events
          .firstWhere((event) => event is SocketClosed)
          .timeout(const Duration(seconds: 5));
      socket.send(const Leave());
      try {
        await closed;
        left = true;
      } on Object {
        // no close 1000 in time (or `error` unavailable): try REST instead
      }
    }
    if (!left) {
      try {
        await ref.read(restClientProvider).leave(active.joined);
      } on ApiException catch (e) {
        // Already out: the session ended, or we were removed meanwhile.
        if (!(e.isNotFound || e.isEnded || e.status == 401 || e.status == 403)) rethrow;
      }
    }
    if (identical(active, _active)) ref.read(activeSessionProvider.notifier).set(null);
  }

  void _onEvent(SocketEvent event) {
    switch (event) {
      case SocketOpened():
        state = state.copyWith(connection: ConnectionPhase.online);
        _sendViewportSize();
        // A connection that never says counts as visible: say it every time.
        _socket?.send(VisibilityChange(_visibility.visible));
      case SocketMessage e:
        _onMessage(e.message);
      case SocketRetrying e:
        state = state.copyWith(connection: ConnectionPhase.offline);
        if (e.handshakeFailed) unawaited(_checkStillActive());
      case SocketClosed e:
        _stop(_stopReason(e.closeCode));
    }
  }

  void _onMessage(ServerMessage message) {
    final before = state;
    state = applyMessage(before, message);
    _alerts?.onMessage(before, message);
    switch (message) {
      case SessionState():
        final pacer = _pacer;
        if (pacer != null) {
          pacer.setPace(state.sendInterval, state.pace?.reason);
          pacer.sendNow(); // the latest position once connected, nothing older
        }
      case UpdateInterval m:
        _pacer?.setPace(m.interval, m.reason);
      case LocateNow():
        unawaited(_pacer?.locateNow());
      case SessionEnded():
        _stop(StopReason.ended);
      default:
        break;
    }
  }

  static StopReason _stopReason(int? closeCode) => switch (closeCode) {
        CloseCode.normal => StopReason.left,
        CloseCode.sessionEnded => StopReason.ended,
        CloseCode.replaced => StopReason.replaced,
        CloseCode.unauthorized => StopReason.unauthorized,
        _ => StopReason.removed,
      };

  /// The server refused the upgrade or was unreachable; only REST can tell
  /// whether the session is over (docs/protocol.md, "Connecting").
  Future<void> _checkStillActive() async {
    final active = _active;
    if (active == null) return;
    try {
      final details = await ref.read(restClientProvider).getSession(active.joined.sessionId);
      if (!details.isActive && identical(active, _active)) {
        state = state.copyWith(endedReason: details.endedReason);
        _stop(StopReason.ended);
      }
    } on ApiException catch (e) {
      if (e.isNotFound && identical(active, _active)) _stop(StopReason.ended);
    }
  }

  bool _sendFix(Position fix) {
    final update = locationUpdateFromFix(fix);
    return update != null && send(update); // dropped while offline
  }

  void _sendVisibility(bool? visible) {
    if (visible != null) _socket?.send(VisibilityChange(visible));
  }

  void _sendViewportSize() {
    final size = _viewportSize;
    if (size != null) _socket?.send(size);
  }

  void _stop(StopReason reason) {
    if (state.stopped != null) return;
    _closeResources();
    state = state.copyWith(stopped: reason, sharing: false);
  }

  void _closeResources() {
    _viewportTimer?.cancel();
    _pacer?.close();
    _pacer = null;
    _alerts = null;
    unawaited(_events?.cancel());
    _events = null;
    unawaited(_socket?.close());
    _socket = null;
  }

  void _teardown() {
    _closeResources();
    _active = null;
    _viewportSize = null;
  }
}
