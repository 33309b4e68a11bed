import 'package:flutter/material.dart';

import '../../api/protocol.dart';
import '../format.dart';

/// Prominent, above the map, while anyone's status is `need_help`: their name,
/// their note, their last position (or "Position unknown") and "Show on map".
class NeedHelpBanner extends StatelessWidget {
  const NeedHelpBanner({super.key, required this.people, required this.now, required this.onShowOnMap});

  /// At most this many rows; the rest are counted.
  static const maxRows = 3;

  /// The participants asking for help (not this device), oldest request first.
  final List<Participant> people;
  final DateTime now;
  final void Function(Participant participant) onShowOnMap;

  @override
  Widget build(BuildContext context) {
    if (people.isEmpty) return const SizedBox.shrink();
    final scheme = Theme.of(context).colorScheme;
    final text = TextStyle(color: scheme.onError);
    return Semantics(
      liveRegion: true,
      child: Material(
        color: scheme.error,
        child: SafeArea(
          bottom: false,
          child: Padding(
            padding: const EdgeInsets.fromLTRB(12, 6, 4, 6),
            child: Column(
              crossAxisAlignment: CrossAxisAlignment.stretch,
              children: [
                for (final person in people.take(maxRows)) _row(person, text, scheme),
                if (people.length > maxRows)
                  Text('and ${people.length - maxRows} more asking for help', style: text),
              ],
            ),
          ),
        ),
      ),
    );
  }

  Widget _row(Participant person, TextStyle text, ColorScheme scheme) {
    final location = person.location;
    final note = person.status?.text;
    final where = location == null
        ? 'Position unknown'
        : '${person.stale ? 'Last known position' : 'Position'} ${positionLabel(location.lat, location.lng)}'
            '${person.stale ? ' (${lastSeenLabel(person.lastSeen, now)})' : ''}';
    return Row(
      key: Key('help-${person.userId}'),
      children: [
        Icon(Icons.sos, color: scheme.onError),
        const SizedBox(width: 8),
        Expanded(
          child: Column(
            crossAxisAlignment: CrossAxisAlignment.start,
            children: [
              Text('${person.displayName} needs help', style: text.copyWith(fontWeight: FontWeight.bold)),
              if (note != null) Text(note, style: text),
              Text(where, style: text.copyWith(fontSize: 12)),
            ],
          ),
        ),
        if (location != null)
          TextButton(
            key: Key('showOnMap-${person.userId}'),
            style: TextButton.styleFrom(foregroundColor: scheme.onError),
            onPressed: () => onShowOnMap(person),
            child: const Text('Show on map'),
          ),
      ],
    );
  }
}
