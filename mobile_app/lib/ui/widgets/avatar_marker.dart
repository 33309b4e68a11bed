import 'package:flutter/material.dart';

/// The server's palette (locshare/net/_validation.py): distinct on a map, and
/// readable with white initials.
const avatarPalette = [
  '#E6194B', '#3CB44B', '#4363D8', '#F58231', '#911EB4', '#42D4F4', '#F032E6', //
  '#469990', '#9A6324', '#800000', '#808000', '#000075', '#E67E22', '#2E86C1', //
];

/// `#RRGGBB` to a colour; grey for anything else.
Color colorFromHex(String hex) {
  final value = hex.length == 7 && hex.startsWith('#') ? int.tryParse(hex.substring(1), radix: 16) : null;
  return value == null ? Colors.grey : Color(0xFF000000 | value);
}

/// Up to two initials: "Ada Lovelace" -> "AL". Characters, not code units: a
/// name may start with an emoji or a combining accent.
String initialsOf(String name) {
  final words = name.trim().split(RegExp(r'\s+')).where((w) => w.isNotEmpty).toList();
  if (words.isEmpty) return '?';
  return [words.first, if (words.length > 1) words.last].map((w) => w.characters.first).join().toUpperCase();
}

/// A participant on the map: a coloured disc with initials, a presence dot and
/// an optional caption under it. The disc sits at the centre of the box, so a
/// Marker of [boxWidth] x [boxHeight] puts it exactly on the position.
class AvatarMarker extends StatelessWidget {
  const AvatarMarker({
    super.key,
    required this.name,
    required this.color,
    this.online = true,
    this.stale = false,
    this.isMe = false,
    this.caption,
  });

  static const double diameter = 40;
  static const double boxWidth = 120;
  static const double boxHeight = 96;

  final String name;
  final Color color;
  final bool online;
  final bool stale; // location older than the server keeps: drawn greyed
  final bool isMe;
  final String? caption;

  @override
  Widget build(BuildContext context) {
    final text = caption;
    final disc = Container(
      width: diameter,
      height: diameter,
      alignment: Alignment.center,
      decoration: BoxDecoration(
        color: stale ? Colors.grey : color,
        shape: BoxShape.circle,
        border: Border.all(color: Colors.white, width: isMe ? 3 : 2),
        boxShadow: const [BoxShadow(color: Colors.black26, blurRadius: 4)],
      ),
      child: Text(initialsOf(name), style: const TextStyle(color: Colors.white, fontWeight: FontWeight.bold)),
    );
    final presence = Container(
      width: 12,
      height: 12,
      decoration: BoxDecoration(
        color: online ? Colors.green : Colors.grey,
        shape: BoxShape.circle,
        border: Border.all(color: Colors.white, width: 1.5),
      ),
    );
    return Semantics(
      label: '$name, ${online ? 'online' : 'offline'}${text == null ? '' : ', $text'}',
      child: SizedBox(
        width: boxWidth,
        height: boxHeight,
        child: Stack(
          alignment: Alignment.center,
          children: [
            Opacity(
              opacity: stale ? 0.6 : 1,
              child: SizedBox.square(
                dimension: diameter,
                child: Stack(clipBehavior: Clip.none, children: [
                  disc,
                  Positioned(right: -2, bottom: -2, child: presence),
                ]),
              ),
            ),
            if (text != null)
              Positioned(
                top: boxHeight / 2 + diameter / 2 + 2,
                child: DecoratedBox(
                  decoration: BoxDecoration(color: Colors.black54, borderRadius: BorderRadius.circular(6)),
                  child: Padding(
                    padding: const EdgeInsets.symmetric(horizontal: 5, vertical: 1),
                    child: Text(text, style: const TextStyle(color: Colors.white, fontSize: 11)),
                  ),
                ),
              ),
          ],
        ),
      ),
    );
  }
}
