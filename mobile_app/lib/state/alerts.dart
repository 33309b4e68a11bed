// Local notifications for what nobody should miss: someone arrived at a meeting
// point (a `meet` place), or someone asks for help (`need_help`). Which message
// deserves one is a pure decision ([alertFor]); showing it goes through the small
// [LocalNotifications] seam, so tests use a fake instead of the plugin.
import 'dart:async';

import 'package:flutter/foundation.dart';
import 'package:flutter_local_notifications/flutter_local_notifications.dart' as fln;

import '../api/protocol.dart';
import 'session_reducer.dart';

/// What the app needs from the platform's notifications.
abstract interface class LocalNotifications {
  /// Asks for permission where the platform wants it (Android 13+, iOS); safe to
  /// call again: the system asks the user once.
  Future<void> requestPermission();

  /// Shows (or replaces, same [id]) a notification.
  Future<void> show(Alert alert);
}

/// One notification.
@immutable
class Alert {
  const Alert({required this.id, required this.title, required this.body});

  /// Same id, same notification: a repeated alert about the same thing replaces
  /// the old one instead of piling up.
  final int id;
  final String title;
  final String body;

  @override
  bool operator ==(Object other) => other is Alert && other.id == id && other.title == title && other.body == body;

  @override
  int get hashCode => Object.hash(id, title, body);

  @override
  String toString() => 'Alert($id, $title, $body)';
}

int _alertId(String what, String userId, [String place = '']) => Object.hash(what, userId, place) & 0x7fffffff;

/// The notification [message] deserves, given the state [before] it was applied,
/// or null. Only live events count: a `session_state` after a reconnect repeats
/// what is already known, and this device's own actions never notify it.
Alert? alertFor(SessionView before, ServerMessage message) {
  final me = before.you?.userId;
  String nameOf(String userId) => before.participants[userId]?.displayName ?? 'Someone';
  switch (message) {
    case Arrived m when m.userId != me:
      final place = before.places[m.placeId];
      if (place == null || place.kind != PlaceKind.meet) return null;
      if (before.arrivals.contains(m.arrival)) return null;
      return Alert(
        id: _alertId('arrived', m.userId, m.placeId),
        title: '${nameOf(m.userId)} arrived',
        body: 'At the meeting point "${place.name}".',
      );
    case StatusMessage m when m.userId != me && m.status?.status == StatusKind.needHelp:
      final participant = before.participants[m.userId];
      if (participant == null || participant.needsHelp) return null; // already known (a new note)
      final location = participant.location;
      final where = location == null
          ? 'Position unknown.'
          : 'Last position ${location.lat.toStringAsFixed(5)}, ${location.lng.toStringAsFixed(5)}.';
      final note = m.status?.text;
      return Alert(
        id: _alertId('need_help', m.userId),
        title: '${participant.displayName} needs help',
        body: note == null ? where : '"$note" $where',
      );
    default:
      return null;
  }
}

/// Shows [alertFor]'s notifications through [notifications].
class SessionAlerts {
  SessionAlerts(this.notifications);

  final LocalNotifications notifications;

  /// Called with every server message and the state before it was applied.
  void onMessage(SessionView before, ServerMessage message) {
    final alert = alertFor(before, message);
    if (alert != null) unawaited(notifications.show(alert));
  }
}

/// flutter_local_notifications (README.md, "Notifications").
class PluginNotifications implements LocalNotifications {
  PluginNotifications([fln.FlutterLocalNotificationsPlugin? plugin])
      : _plugin = plugin ?? fln.FlutterLocalNotificationsPlugin();

  static const _channelId = 'locshare_alerts';
  static const _channelName = 'Arrivals and calls for help';

  final fln.FlutterLocalNotificationsPlugin _plugin;
  Future<bool>? _ready;

  /// Initialises once; false if the platform has no notifications (a failure
  /// here must never break the map).
  Future<bool> _init() => _ready ??= _initialize();

  Future<bool> _initialize() async {
    try {
      await _plugin.initialize(const fln.InitializationSettings(
        // A monochrome status-bar icon (res/drawable, kept by res/raw/keep.xml).
        android: fln.AndroidInitializationSettings('ic_stat_locshare'),
        // Permission is asked for by requestPermission(), after the location prompt.
        iOS: fln.DarwinInitializationSettings(
          requestAlertPermission: false,
          requestBadgePermission: false,
          requestSoundPermission: false,
        ),
      ));
      return true;
    } on Object catch (error) {
      debugPrint('notifications unavailable: $error');
      return false;
    }
  }

  @override
  Future<void> requestPermission() async {
    if (!await _init()) return;
    try {
      await _plugin
          .resolvePlatformSpecificImplementation<fln.AndroidFlutterLocalNotificationsPlugin>()
          ?.requestNotificationsPermission();
      await _plugin
          .resolvePlatformSpecificImplementation<fln.IOSFlutterLocalNotificationsPlugin>()
          ?.requestPermissions(alert: true, sound: true);
    } on Object catch (error) {
      debugPrint('notification permission: $error');
    }
  }

  @override
  Future<void> show(Alert alert) async {
    if (!await _init()) return;
    try {
      await _plugin.show(
        alert.id,
        alert.title,
        alert.body,
        const fln.NotificationDetails(
          android: fln.AndroidNotificationDetails(
            _channelId,
            _channelName,
            channelDescription: 'Someone arrived at a meeting point, or asks for help.',
            importance: fln.Importance.high,
            priority: fln.Priority.high,
            category: fln.AndroidNotificationCategory.message,
          ),
          iOS: fln.DarwinNotificationDetails(presentAlert: true, presentSound: true),
        ),
      );
    } on Object catch (error) {
      debugPrint('notification not shown: $error');
    }
  }
}
