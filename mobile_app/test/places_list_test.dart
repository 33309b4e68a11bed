import 'package:flutter/material.dart';
import 'package:flutter_test/flutter_test.dart';
import 'package:locshare_app/api/protocol.dart';
import 'package:locshare_app/state/session_reducer.dart';
import 'package:locshare_app/ui/widgets/place_form.dart';
import 'package:locshare_app/ui/widgets/places_list.dart';

import 'fixtures.dart';

void main() {
  // Alice is this device: she added the camp; Bob added the lake; the organiser the car park.
  final view = applyMessage(
    const SessionView(),
    ServerMessage.parse(sessionState(
      places: [
        circlePlace(),
        polygonPlace(),
        circlePlace(placeId: 'parking', name: 'Car park', kind: 'parking', author: null, radiusM: 100),
      ],
      arrivals: [
        {'user_id': bob, 'place_id': campId},
      ],
    )),
  );

  late List<String> shown;
  late List<String> removed;
  late int addHere;

  Future<void> pumpList(WidgetTester tester, SessionView view, {bool positionKnown = true}) async {
    shown = [];
    removed = [];
    addHere = 0;
    await tester.pumpWidget(MaterialApp(
      home: Scaffold(
        body: PlacesList(
          view: view,
          onShow: (place) => shown.add(place.placeId),
          onRemove: (place) => removed.add(place.placeId),
          onAddAtMyPosition: positionKnown ? () => addHere++ : null,
        ),
      ),
    ));
  }

  testWidgets('lists every place with its kind, size, author and who is there', (tester) async {
    await pumpList(tester, view);
    expect(find.text('Camp'), findsOneWidget);
    expect(find.text('Lake'), findsOneWidget);
    expect(find.text('Car park'), findsOneWidget);
    expect(find.textContaining('Meeting point · within 50 m · added by you'), findsOneWidget);
    expect(find.textContaining('Point of interest · area · added by Bob'), findsOneWidget);
    expect(find.textContaining('Parking · within 100 m · added by the organiser'), findsOneWidget);
    expect(find.textContaining('Here now: Bob'), findsOneWidget);
  });

  testWidgets('only my own places can be removed', (tester) async {
    await pumpList(tester, view);
    expect(find.byKey(const Key('remove-$campId')), findsOneWidget);
    expect(find.byKey(const Key('remove-$lakeId')), findsNothing);
    expect(find.byKey(const Key('remove-parking')), findsNothing);
    await tester.tap(find.byKey(const Key('remove-$campId')));
    expect(removed, [campId]);
  });

  testWidgets('tapping a place shows it; "Add at my position" needs a position', (tester) async {
    await pumpList(tester, view);
    await tester.tap(find.text('Lake'));
    expect(shown, [lakeId]);
    await tester.tap(find.byKey(const Key('addPlaceHere')));
    expect(addHere, 1);

    await pumpList(tester, view, positionKnown: false);
    await tester.tap(find.byKey(const Key('addPlaceHere')));
    expect(addHere, 0);
  });

  testWidgets('no places yet', (tester) async {
    await pumpList(tester, applyMessage(const SessionView(), ServerMessage.parse(sessionState())));
    expect(find.text('No places yet. Long-press the map to add one there.'), findsOneWidget);
  });

  testWidgets('the new-place form: name, kind and radius', (tester) async {
    final drafts = <PlaceDraft>[];
    await tester.pumpWidget(MaterialApp(home: Scaffold(body: PlaceForm(onSubmit: drafts.add))));
    await tester.tap(find.byKey(const Key('addPlace')));
    await tester.pump();
    expect(find.text('Give the place a name.'), findsOneWidget);
    expect(drafts, isEmpty);

    await tester.enterText(find.byKey(const Key('placeName')), ' Fuel stop ');
    await tester.tap(find.byKey(const Key('kind-fuel')));
    await tester.pump();
    await tester.tap(find.byKey(const Key('addPlace')));
    await tester.pump();
    final draft = drafts.single;
    expect([draft.name, draft.kind, draft.radiusM], ['Fuel stop', PlaceKind.fuel, 50.0]);
    final message = draft.at(const GeoPoint(52.5, 13.4));
    expect(message.data, {'name': 'Fuel stop', 'kind': 'fuel', 'lat': 52.5, 'lng': 13.4, 'radius_m': 50.0});
  });

  test('place name rule matches the server', () {
    expect(validatePlaceName('Camp'), isNull);
    expect(validatePlaceName('  ${'é' * 60}  '), isNull);
    expect(validatePlaceName('x' * 61), isNotNull);
    expect(validatePlaceName('   '), isNotNull);
    expect(validatePlaceName('a\tb'), isNotNull);
    expect(validatePlaceName('\u202Egpj.exe'), isNotNull);
    expect(validatePlaceName('\u200BCamp'), isNotNull, reason: 'a leading invisible character');
    expect(validatePlaceName('Camp\u200D🏕'), isNull, reason: 'joiners are fine after the first character');
  });
}
