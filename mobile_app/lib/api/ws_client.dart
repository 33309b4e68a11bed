// One WebSocket per session, reconnecting with exponential backoff and jitter
// (docs/protocol.md, "Reconnecting").
import 'dart:async';
import 'dart:math' as math;

import 'package:web_socket_channel/web_socket_channel.dart';

import 'protocol.dart';

/// Exponential backoff with jitter: 0.5 s doubling to 30 s, each wait randomised
/// by +-50 %, so a server restart is not met by every client at the same instant.
class Backoff {
  Backoff({
    this.initial = const Duration(milliseconds: 500),
    this.maximum = const Duration(seconds: 30),
    this.jitter = 0.5,
    math.Random? random,
  }) : _random = random ?? math.Random();

  final Duration initial;
  final Duration maximum;
  final double jitter;
  final math.Random _random;
  int _attempt = 0;

  int get attempt => _attempt;

  /// The wait before the next attempt.
  Duration next() {
    final base = math.min(
      initial.inMicroseconds * math.pow(2, _attempt).toDouble(),
      maximum.inMicroseconds.toDouble(),
    );
    if (_attempt < 32) _attempt++;
    final factor = 1 + jitter * (2 * _random.nextDouble() - 1);
    return Duration(microseconds: (base * factor).round());
  }

  /// Called once a connection proved healthy (a `session_state` arrived).
  void reset() => _attempt = 0;
}

/// Whether a close with [code] (null: no close frame) should be retried.
bool shouldReconnect(int? code) => !CloseCode.terminal.contains(code);

sealed class SocketEvent {
  const SocketEvent();
}

/// The socket is open; `session_state` follows.
class SocketOpened extends SocketEvent {
  const SocketOpened();
}

class SocketMessage extends SocketEvent {
  const SocketMessage(this.message);

  final ServerMessage message;
}

/// The connection failed or dropped; another attempt follows after [delay].
/// [handshakeFailed]: refused before the upgrade, or unreachable. The HTTP status
/// is not visible here, so ask REST whether the session still exists.
class SocketRetrying extends SocketEvent {
  const SocketRetrying({required this.closeCode, required this.handshakeFailed, required this.delay});

  final int? closeCode;
  final bool handshakeFailed;
  final Duration delay;
}

/// Closed for good (1000, 4000, 4001, 4401, 4403): no more attempts.
class SocketClosed extends SocketEvent {
  const SocketClosed(this.closeCode);

  final int? closeCode;
}

typedef ChannelConnector = WebSocketChannel Function(Uri uri);

class SessionSocket {
  SessionSocket(
    this.uri, {
    ChannelConnector? connect,
    Backoff? backoff,
    this.heartbeat = const Duration(seconds: 20),
  })  : _connect = connect ?? WebSocketChannel.connect,
        _backoff = backoff ?? Backoff();

  /// `websocket_url` with the `token` query parameter.
  final Uri uri;

  /// How often to send `ping`. A connection silent for three of these is dead
  /// (mobile networks drop sockets without a close), and is replaced.
  final Duration heartbeat;

  final ChannelConnector _connect;
  final Backoff _backoff;
  final _events = StreamController<SocketEvent>.broadcast();
  final _silence = Stopwatch();
  WebSocketChannel? _channel;
  Completer<void>? _wake;
  void Function()? _dropConnection;
  Timer? _heartbeatTimer;
  bool _started = false;
  bool _disposed = false;

  Stream<SocketEvent> get events => _events.stream;

  bool get isOpen => _channel != null;

  void start() {
    if (_started) return;
    _started = true;
    unawaited(_run());
  }

  /// Sends [message] if the socket is open. Nothing is ever queued: a location
  /// that could not be sent now is worthless later.
  bool send(ClientMessage message) {
    final channel = _channel;
    if (channel == null) return false;
    channel.sink.add(message.encode());
    return true;
  }

  /// Skips the rest of the current backoff wait (e.g. the app came back to the
  /// foreground and the network is likely fine again).
  void reconnectNow() {
    final wake = _wake;
    if (wake != null && !wake.isCompleted) wake.complete();
  }

  Future<void> close() async {
    if (_disposed) return;
    _disposed = true;
    _heartbeatTimer?.cancel();
    reconnectNow();
    _dropConnection?.call();
    await _events.close();
  }

  void _emit(SocketEvent event) {
    if (!_events.isClosed) _events.add(event);
  }

  Future<void> _run() async {
    while (!_disposed) {
      WebSocketChannel? channel;
      try {
        channel = _connect(uri);
        await channel.ready;
      } on Object {
        channel = null; // refused before the upgrade, or unreachable
      }
      if (channel == null) {
        if (!await _retry(null, handshakeFailed: true)) return;
        continue;
      }
      if (_disposed) {
        unawaited(channel.sink.close());
        return;
      }
      final dropped = await _serve(channel);
      if (_disposed) return;
      final code = dropped ? null : channel.closeCode;
      if (!shouldReconnect(code)) {
        _emit(SocketClosed(code));
        return;
      }
      if (!await _retry(code, handshakeFailed: false)) return;
    }
  }

  /// Reads frames until the connection ends; true if we dropped it ourselves.
  Future<bool> _serve(WebSocketChannel channel) async {
    final done = Completer<bool>();
    _channel = channel;
    _dropConnection = () {
      if (!done.isCompleted) done.complete(true);
    };
    _silence
      ..reset()
      ..start();
    _heartbeatTimer = Timer.periodic(heartbeat, (_) {
      if (_silence.elapsed > heartbeat * 3) {
        _dropConnection?.call();
      } else {
        send(const Ping());
      }
    });
    _emit(const SocketOpened());
    final subscription = channel.stream.listen(
      (frame) {
        _silence.reset();
        if (frame is! String) return;
        final message = ServerMessage.tryParse(frame);
        if (message == null) return; // not ours to fix; the connection stays useful
        if (message is SessionState) _backoff.reset();
        _emit(SocketMessage(message));
      },
      // The close that follows an error decides what happens next.
      onError: (Object _) {},
      onDone: () {
        if (!done.isCompleted) done.complete(false);
      },
    );
    final dropped = await done.future;
    _channel = null;
    _dropConnection = null;
    _heartbeatTimer?.cancel();
    _silence.stop();
    await subscription.cancel();
    unawaited(channel.sink.close());
    return dropped;
  }

  Future<bool> _retry(int? code, {required bool handshakeFailed}) async {
    if (_disposed) return false;
    final delay = _backoff.next();
    _emit(SocketRetrying(closeCode: code, handshakeFailed: handshakeFailed, delay: delay));
    final wake = _wake = Completer<void>();
    final timer = Timer(delay, () {
      if (!wake.isCompleted) wake.complete();
    });
    await wake.future;
    timer.cancel();
    return !_disposed;
  }
}
