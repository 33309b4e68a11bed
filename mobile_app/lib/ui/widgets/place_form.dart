import 'package:flutter/material.dart';
import 'package:flutter/services.dart';

import '../../api/protocol.dart';
import '../format.dart';
import 'place_visuals.dart';

/// The server's rule for a place name: 1 to 60 characters after trimming, no
/// control or bidirectional formatting characters, a visible first character.
String? validatePlaceName(String? value) {
  final name = value?.trim() ?? '';
  if (name.isEmpty) return 'Give the place a name.';
  if (name.runes.length > PlaceLimits.maxNameChars) return 'Use at most ${PlaceLimits.maxNameChars} characters.';
  if (hasControlCharacters(name)) return 'Remove line breaks and other control characters.';
  if (hasBidiControls(name)) return 'Remove direction-changing characters.';
  if (startsInvisible(name)) return 'Start the name with a visible character.';
  return null;
}

/// The radii offered, in metres (the server takes 10 to 2000).
const placeRadiiM = [10.0, 25.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0];

/// A new circle place, before it has a position.
class PlaceDraft {
  const PlaceDraft({required this.name, required this.kind, required this.radiusM});

  final String name;
  final String kind;
  final double radiusM;

  PlaceAdd at(GeoPoint center) => PlaceAdd.circle(name: name, kind: kind, center: center, radiusM: radiusM);
}

/// Name, kind and radius of a new place.
class PlaceForm extends StatefulWidget {
  const PlaceForm({super.key, required this.onSubmit, this.onCancel, this.where});

  final void Function(PlaceDraft draft) onSubmit;
  final VoidCallback? onCancel;

  /// Where it goes, in words ("at your position", "52.52000, 13.40500").
  final String? where;

  @override
  State<PlaceForm> createState() => _PlaceFormState();
}

class _PlaceFormState extends State<PlaceForm> {
  final _form = GlobalKey<FormState>();
  final _name = TextEditingController();
  String _kind = PlaceKind.meet;
  int _radius = placeRadiiM.indexOf(PlaceLimits.defaultRadiusM);

  @override
  void dispose() {
    _name.dispose();
    super.dispose();
  }

  void _submit() {
    if (!_form.currentState!.validate()) return;
    widget.onSubmit(PlaceDraft(name: _name.text.trim(), kind: _kind, radiusM: placeRadiiM[_radius]));
  }

  @override
  Widget build(BuildContext context) {
    final where = widget.where;
    return Form(
      key: _form,
      child: Column(
        mainAxisSize: MainAxisSize.min,
        crossAxisAlignment: CrossAxisAlignment.stretch,
        children: [
          if (where != null) Text(where, style: Theme.of(context).textTheme.bodySmall),
          TextFormField(
            key: const Key('placeName'),
            controller: _name,
            autofocus: true,
            textCapitalization: TextCapitalization.sentences,
            maxLength: PlaceLimits.maxNameChars,
            maxLengthEnforcement: MaxLengthEnforcement.none,
            decoration: const InputDecoration(labelText: 'Name', hintText: 'e.g. Car park at the trailhead'),
            validator: validatePlaceName,
          ),
          Wrap(spacing: 6, runSpacing: 6, children: [
            for (final kind in PlaceKind.all)
              ChoiceChip(
                key: Key('kind-$kind'),
                avatar: Icon(placeIcon(kind), size: 18, color: placeColor(kind)),
                label: Text(placeKindLabel(kind)),
                selected: _kind == kind,
                onSelected: (_) => setState(() => _kind = kind),
              ),
          ]),
          const SizedBox(height: 8),
          Text('Radius: ${distanceLabel(placeRadiiM[_radius])}'),
          Slider(
            key: const Key('placeRadius'),
            value: _radius.toDouble(),
            max: (placeRadiiM.length - 1).toDouble(),
            divisions: placeRadiiM.length - 1,
            label: distanceLabel(placeRadiiM[_radius]),
            onChanged: (value) => setState(() => _radius = value.round()),
          ),
          Row(mainAxisAlignment: MainAxisAlignment.end, children: [
            if (widget.onCancel != null) TextButton(onPressed: widget.onCancel, child: const Text('Cancel')),
            const SizedBox(width: 8),
            FilledButton(key: const Key('addPlace'), onPressed: _submit, child: const Text('Add place')),
          ]),
        ],
      ),
    );
  }
}

/// Asks for a new place's name, kind and radius; null if cancelled.
Future<PlaceDraft?> showPlaceForm(BuildContext context, {String? where}) => showDialog<PlaceDraft>(
      context: context,
      builder: (context) => AlertDialog(
        title: const Text('New place'),
        content: SingleChildScrollView(
          child: PlaceForm(
            where: where,
            onSubmit: (draft) => Navigator.pop(context, draft),
            onCancel: () => Navigator.pop(context),
          ),
        ),
      ),
    );
