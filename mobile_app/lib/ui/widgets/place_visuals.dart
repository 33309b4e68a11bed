import 'package:flutter/material.dart';

import '../../api/protocol.dart';

/// An icon per place kind (a kind from a newer server gets a plain pin).
IconData placeIcon(String kind) => switch (kind) {
      PlaceKind.meet => Icons.groups,
      PlaceKind.poi => Icons.star,
      PlaceKind.hazard => Icons.warning_amber,
      PlaceKind.parking => Icons.local_parking,
      PlaceKind.fuel => Icons.local_gas_station,
      PlaceKind.food => Icons.restaurant,
      _ => Icons.place,
    };

Color placeColor(String kind) => switch (kind) {
      PlaceKind.meet => Colors.deepPurple,
      PlaceKind.poi => Colors.blue,
      PlaceKind.hazard => Colors.red,
      PlaceKind.parking => Colors.indigo,
      PlaceKind.fuel => Colors.teal,
      PlaceKind.food => Colors.orange,
      _ => Colors.blueGrey,
    };

String placeKindLabel(String kind) => switch (kind) {
      PlaceKind.meet => 'Meeting point',
      PlaceKind.poi => 'Point of interest',
      PlaceKind.hazard => 'Hazard',
      PlaceKind.parking => 'Parking',
      PlaceKind.fuel => 'Fuel',
      PlaceKind.food => 'Food',
      _ => kind,
    };

/// A place's icon on the map: a disc in the kind's colour, with how many people
/// are there now.
class PlaceMarker extends StatelessWidget {
  const PlaceMarker({super.key, required this.place, this.present = 0});

  static const double size = 32;

  final Place place;
  final int present;

  @override
  Widget build(BuildContext context) {
    final color = placeColor(place.kind);
    return Semantics(
      label: '${placeKindLabel(place.kind)} ${place.name}${present > 0 ? ', $present here' : ''}',
      child: Stack(clipBehavior: Clip.none, children: [
        Container(
          width: size,
          height: size,
          decoration: BoxDecoration(
            color: color,
            shape: BoxShape.circle,
            border: Border.all(color: Colors.white, width: 2),
            boxShadow: const [BoxShadow(color: Colors.black26, blurRadius: 3)],
          ),
          child: Icon(placeIcon(place.kind), color: Colors.white, size: 18),
        ),
        if (present > 0)
          Positioned(
            right: -6,
            top: -6,
            child: CircleAvatar(
              radius: 9,
              backgroundColor: Colors.white,
              child: Text('$present', style: TextStyle(fontSize: 11, color: color, fontWeight: FontWeight.bold)),
            ),
          ),
      ]),
    );
  }
}
