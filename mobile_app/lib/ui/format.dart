import 'package:flutter/material.dart';

/// "just now", "4 min ago", "2 h ago": for participants whose location is old.
String lastSeenLabel(DateTime lastSeen, DateTime now) {
  final age = now.difference(lastSeen);
  if (age.inMinutes < 1) return 'just now';
  if (age.inHours < 1) return '${age.inMinutes} min ago';
  if (age.inDays < 1) return '${age.inHours} h ago';
  return '${age.inDays} d ago';
}

/// A local time of day in the user's format, e.g. "18:30" or "6:30 PM"
/// (TimeOfDay.format honours the device's 24-hour setting).
String timeOfDay(BuildContext context, DateTime time) => TimeOfDay.fromDateTime(time.toLocal()).format(context);

/// A user-facing sentence for why a session is over.
String endedMessage(String? reason) => switch (reason) {
      'ended' => 'The organiser ended this session.',
      'expired' => 'This session reached its end time.',
      'inactive' => 'This session ended after an hour without activity.',
      _ => 'This session has ended.',
    };
