// Riverpod wiring: the REST client, the session this device is in, and the
// controller that owns its WebSocket and location stream.
import 'dart:async';

import 'package:flutter_riverpod/flutter_riverpod.dart';
import 'package:geolocator/geolocator.dart';

import '../api/protocol.dart';
import '../api/rest_client.dart';
import '../api/ws_client.dart';
import '../config.dart';
import 'location.dart';
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

/// Overridable in tests; the real one is geolocator's position stream.
final positionStreamProvider = Provider<Stream<Position> Function(Duration interval)>(
  (ref) => (interval) => Geolocator.getPositionStream(locationSettings: locationSettings(interval)),
);

final sessionControllerProvider =
    NotifierProvider<SessionController, SessionView>(SessionController.new);

class SessionController extends Notifier<SessionView> {
  ActiveSession? _active;
  SessionSocket? _socket;
  StreamSubscription<SocketEvent>? _events;
  StreamSubscription<Position>? _positions;
  Position? _latestFix; // the latest fix only: never a queue of old ones
  ViewportSize? _viewportSize;
  Timer? _sendTimer;
  Timer? _viewportTimer;

  @override
  SessionView build() {
    final active = ref.watch(activeSessionProvider);
    ref.onDispose(_teardown);
    _active = active;
    if (active == null) return const SessionView();
    final socket = SessionSocket(active.joined.socketUri(ref.read(configProvider).apiBase));
    _socket = socket;
    _events = socket.events.listen(_onEvent);
    socket.start();
    return const SessionView();
  }

  /// This device's latest fix, for "Center on me" before the server echoed it.
  Position? get lastFix => _latestFix;

  /// Starts sending this device's location, if the user allowed it.
  Future<void> startSharing() async {
    final active = _active;
    if (active == null || _positions != null || state.stopped != null) return;
    if (await checkLocationAccess() != LocationAccess.granted) return;
    if (!identical(active, _active) || _positions != null) return;
    _positions = ref.read(positionStreamProvider)(state.limits.updateInterval).listen(
      (fix) => _latestFix = fix,
      // Location turned off or permission revoked: stop rather than repeat an old fix.
      onError: (Object _) => _latestFix = null,
      onDone: () {
        _positions = null;
        _latestFix = null;
        if (identical(active, _active)) state = state.copyWith(sharing: false);
      },
    );
    state = state.copyWith(sharing: true);
  }

  /// The map's size in logical pixels; sent now and after every reconnect.
  void setViewportSize(double width, double height) {
    final size = ViewportSize.forScreen(width, height);
    if (size == _viewportSize) return;
    _viewportSize = size;
    _viewportTimer?.cancel();
    // A rotation animates through many sizes; only the last one matters.
    _viewportTimer = Timer(const Duration(milliseconds: 300), _sendViewportSize);
  }

  /// The app came back to the foreground: do not wait out the backoff.
  void onResumed() => _socket?.reconnectNow();

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
    state = applyMessage(state, message);
    switch (message) {
      case SessionState m:
        _sendTimer?.cancel();
        _sendTimer = Timer.periodic(m.limits.updateInterval, (_) => _sendLocation());
        _sendLocation(); // the latest position once connected, nothing older
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

  void _sendLocation() {
    final fix = _latestFix;
    final socket = _socket;
    if (fix == null || socket == null) return;
    // geolocator reports a value the platform did not provide as 0.0 rather than
    // null (heading and speed then with a 0.0 accuracy): send those as unknown,
    // not as "perfectly accurate", "due north" or "standing still".
    final update = LocationUpdate.fromFix(
      fix.latitude,
      fix.longitude,
      accuracy: fix.accuracy > 0 ? fix.accuracy : null,
      heading: fix.heading != 0 || fix.headingAccuracy > 0 ? fix.heading : null,
      speed: fix.speed != 0 || fix.speedAccuracy > 0 ? fix.speed : null,
      timestamp: fix.timestamp,
    );
    if (update != null) socket.send(update); // dropped while offline
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
    _sendTimer?.cancel();
    _viewportTimer?.cancel();
    unawaited(_positions?.cancel());
    _positions = null;
    _latestFix = null;
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
