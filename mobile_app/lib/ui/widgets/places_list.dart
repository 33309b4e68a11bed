import 'package:flutter/material.dart';

import '../../api/protocol.dart';
import '../../state/session_reducer.dart';
import '../format.dart';
import 'place_visuals.dart';

/// The session's places: kind, name, size, who added it and who is there now.
/// Places this device added can be removed (the server allows the author and
/// the creator; the app does not hold the creator's token).
class PlacesList extends StatelessWidget {
  const PlacesList({
    super.key,
    required this.view,
    required this.onShow,
    required this.onRemove,
    this.onAddAtMyPosition,
  });

  final SessionView view;
  final void Function(Place place) onShow;
  final void Function(Place place) onRemove;

  /// Null: this device's position is not known, so the button is off.
  final VoidCallback? onAddAtMyPosition;

  String _nameOf(String userId) =>
      userId == view.you?.userId ? 'you' : view.participants[userId]?.displayName ?? 'someone who left';

  @override
  Widget build(BuildContext context) {
    final places = view.places.values.toList();
    final myId = view.you?.userId;
    return Column(
      mainAxisSize: MainAxisSize.min,
      crossAxisAlignment: CrossAxisAlignment.stretch,
      children: [
        Padding(
          padding: const EdgeInsets.symmetric(horizontal: 16),
          child: Row(children: [
            Expanded(child: Text('Places', style: Theme.of(context).textTheme.titleLarge)),
            TextButton.icon(
              key: const Key('addPlaceHere'),
              onPressed: onAddAtMyPosition,
              icon: const Icon(Icons.add_location_alt),
              label: const Text('Add at my position'),
            ),
          ]),
        ),
        if (places.isEmpty)
          const Padding(
            padding: EdgeInsets.all(16),
            child: Text('No places yet. Long-press the map to add one there.'),
          ),
        Flexible(
          child: ListView(
            shrinkWrap: true,
            children: [
              for (final place in places)
                ListTile(
                  key: Key('place-${place.placeId}'),
                  leading: CircleAvatar(
                    backgroundColor: placeColor(place.kind),
                    child: Icon(placeIcon(place.kind), color: Colors.white, size: 20),
                  ),
                  title: Text(place.name),
                  subtitle: Text(_details(place)),
                  isThreeLine: view.presentAt(place.placeId).isNotEmpty,
                  onTap: () => onShow(place),
                  trailing: place.author != null && place.author == myId
                      ? IconButton(
                          key: Key('remove-${place.placeId}'),
                          tooltip: 'Remove ${place.name}',
                          icon: const Icon(Icons.delete_outline),
                          onPressed: () => onRemove(place),
                        )
                      : null,
                ),
            ],
          ),
        ),
      ],
    );
  }

  String _details(Place place) {
    final radius = place.radiusM;
    final size = radius == null ? 'area' : 'within ${distanceLabel(radius)}';
    final author = place.author;
    final by = author == null ? 'added by the organiser' : 'added by ${_nameOf(author)}';
    final present = view.presentAt(place.placeId);
    final here = present.isEmpty ? '' : '\nHere now: ${present.map((p) => _nameOf(p.userId)).join(', ')}';
    return '${placeKindLabel(place.kind)} · $size · $by$here';
  }
}
