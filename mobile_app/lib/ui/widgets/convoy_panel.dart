import 'package:flutter/material.dart';

import '../../api/protocol.dart';
import '../../state/session_reducer.dart';
import '../format.dart';

/// The convoy along the route, leader first: each rider, the gap to the next
/// one (metres, and seconds when known), and an "off route" badge with the
/// distance for those away from the route. Nothing without a route.
class ConvoyPanel extends StatelessWidget {
  const ConvoyPanel({super.key, required this.view, required this.onFocus});

  final SessionView view;
  final void Function(Participant participant) onFocus;

  @override
  Widget build(BuildContext context) {
    final route = view.route;
    if (route == null) return const SizedBox.shrink();
    final convoy = view.convoy;
    final scheme = Theme.of(context).colorScheme;
    final riders = <Widget>[];
    if (convoy != null) {
      for (var i = 0; i < convoy.order.length; i++) {
        final userId = convoy.order[i];
        final participant = view.participants[userId];
        final offRoute = convoy.offRouteDistance(userId);
        final name = userId == view.you?.userId ? 'You' : participant?.displayName ?? '?';
        riders.add(InputChip(
          key: Key('convoy-$userId'),
          avatar: CircleAvatar(child: Text('${i + 1}', style: const TextStyle(fontSize: 11))),
          label: Text(offRoute == null ? name : '$name · off route ${distanceLabel(offRoute)}'),
          backgroundColor: offRoute == null ? null : scheme.errorContainer,
          onPressed: participant?.location == null ? null : () => onFocus(participant!),
        ));
        if (i < convoy.gapsM.length) {
          final seconds = convoy.gapsS[i];
          riders.add(Padding(
            padding: const EdgeInsets.symmetric(horizontal: 4),
            child: Text(
              '${distanceLabel(convoy.gapsM[i])}${seconds == null ? '' : ' · ${durationLabel(seconds)}'}',
              style: Theme.of(context).textTheme.bodySmall,
            ),
          ));
        }
      }
    }
    return Material(
      color: scheme.surface.withAlpha(230),
      elevation: 2,
      borderRadius: BorderRadius.circular(8),
      child: SingleChildScrollView(
        scrollDirection: Axis.horizontal,
        padding: const EdgeInsets.symmetric(horizontal: 8, vertical: 4),
        child: Row(children: [
          Icon(Icons.route, size: 18, color: scheme.primary),
          const SizedBox(width: 4),
          Text('Route ${distanceLabel(route.lengthM)}'),
          const SizedBox(width: 8),
          if (riders.isEmpty) const Text('Nobody on the route yet') else ...riders,
        ]),
      ),
    );
  }
}
