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

/// "350 m", "1.2 km", "42 km".
String distanceLabel(double metres) {
  if (metres < 1000) return '${metres.round()} m';
  return '${(metres / 1000).toStringAsFixed(metres < 10000 ? 1 : 0)} km';
}

/// "45 s", "3 min", "1 h 5 min".
String durationLabel(double seconds) {
  if (seconds < 60) return '${seconds.round()} s';
  if (seconds < 3600) return '${(seconds / 60).round()} min';
  final minutes = (seconds / 60).round();
  return '${minutes ~/ 60} h ${minutes % 60} min';
}

/// "52.52000, 13.40500": about a metre, enough to find someone.
String positionLabel(double lat, double lng) => '${lat.toStringAsFixed(5)}, ${lng.toStringAsFixed(5)}';

/// Unicode rules shared by the names and notes typed here, as the server checks
/// them (locshare/proto/_validation.py): no control characters, no bidirectional
/// formatting characters, and a visible first character.
bool hasControlCharacters(String text) =>
    text.runes.any((r) => r < 0x20 || (r >= 0x7F && r < 0xA0) || r == 0x2028 || r == 0x2029);

const _bidiControls = {
  0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069, 0x200E, 0x200F, 0x061C, //
};

bool hasBidiControls(String text) => text.runes.any(_bidiControls.contains);

// The common invisible characters (format characters and blank look-alikes); the
// server checks every one, this catches what a keyboard or a paste brings.
const _invisible = {
  0x00AD, 0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF, 0x115F, 0x1160, 0x3164, 0xFFA0, 0x2800, //
};

bool startsInvisible(String text) => text.isNotEmpty && _invisible.contains(text.runes.first);
