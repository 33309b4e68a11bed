import 'package:flutter/material.dart';
import 'package:flutter_test/flutter_test.dart';
import 'package:locshare_app/api/protocol.dart';
import 'package:locshare_app/state/session_reducer.dart';
import 'package:locshare_app/ui/widgets/need_help_banner.dart';

import 'fixtures.dart';

void main() {
  final now = DateTime.utc(2026, 11, 20, 12, 10);
  late List<String> shownOnMap;

  /// Everyone in [participants] as the reducer sees them.
  List<Participant> helpers(List<Map<String, Object?>> participants) =>
      applyMessage(const SessionView(), ServerMessage.parse(sessionState(participants: participants))).needingHelp;

  Future<void> pumpBanner(WidgetTester tester, List<Participant> people) async {
    shownOnMap = [];
    await tester.pumpWidget(MaterialApp(
      home: Scaffold(
        body: NeedHelpBanner(people: people, now: now, onShowOnMap: (p) => shownOnMap.add(p.userId)),
      ),
    ));
  }

  testWidgets('nobody asking for help: no banner', (tester) async {
    await pumpBanner(tester, const []);
    expect(find.byIcon(Icons.sos), findsNothing);
    expect(find.textContaining('needs help'), findsNothing);
  });

  testWidgets('name, note, position and "Show on map"', (tester) async {
    await pumpBanner(
      tester,
      helpers([
        participant(alice, 'Alice'),
        participant(bob, 'Bob',
            location: location(lat: 48.85, lng: 2.35), status: statusJson('need_help', text: 'Flat tyre')),
      ]),
    );
    expect(find.text('Bob needs help'), findsOneWidget);
    expect(find.text('Flat tyre'), findsOneWidget);
    expect(find.text('Position 48.85000, 2.35000'), findsOneWidget);
    await tester.tap(find.byKey(const Key('showOnMap-$bob')));
    expect(shownOnMap, [bob]);
  });

  testWidgets('without a position: "Position unknown" and nothing to show', (tester) async {
    await pumpBanner(tester, helpers([participant(carol, 'Carol', status: statusJson('need_help'))]));
    expect(find.text('Carol needs help'), findsOneWidget);
    expect(find.text('Position unknown'), findsOneWidget);
    expect(find.text('Show on map'), findsNothing);
  });

  testWidgets('a stale position is labelled as the last known one', (tester) async {
    await pumpBanner(
      tester,
      helpers([
        participant(bob, 'Bob',
            stale: true, location: location(lat: 48.85, lng: 2.35), status: statusJson('need_help')),
      ]),
    );
    expect(find.textContaining('Last known position 48.85000, 2.35000'), findsOneWidget);
    expect(find.textContaining('10 min ago'), findsOneWidget);
  });

  testWidgets('several people: the first three, and how many more', (tester) async {
    final ids = [for (var i = 0; i < 5; i++) 'd4d4d4d4-0000-4000-8000-00000000000$i'];
    await pumpBanner(
      tester,
      helpers([for (final (i, id) in ids.indexed) participant(id, 'Rider $i', status: statusJson('need_help'))]),
    );
    expect(find.textContaining('needs help'), findsNWidgets(3));
    expect(find.text('and 2 more asking for help'), findsOneWidget);
  });
}
