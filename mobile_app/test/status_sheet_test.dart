import 'package:flutter/material.dart';
import 'package:flutter_test/flutter_test.dart';
import 'package:locshare_app/api/protocol.dart';
import 'package:locshare_app/ui/widgets/status_sheet.dart';

void main() {
  late List<StatusChoice> chosen;

  Future<void> pumpSheet(WidgetTester tester, {ParticipantStatus? current}) async {
    chosen = [];
    await tester.pumpWidget(MaterialApp(
      home: Scaffold(body: StatusSheet(current: current, onSubmit: chosen.add)),
    ));
  }

  testWidgets('offers the four statuses; nothing to set until one is chosen', (tester) async {
    await pumpSheet(tester);
    for (final label in ['On my way', 'Arrived', 'Taking a break', 'Need help']) {
      expect(find.text(label), findsOneWidget);
    }
    expect(find.byKey(const Key('clearStatus')), findsNothing, reason: 'nothing to clear');
    await tester.tap(find.byKey(const Key('setStatus')));
    await tester.pump();
    expect(chosen, isEmpty);
  });

  testWidgets('need help with a note', (tester) async {
    await pumpSheet(tester);
    await tester.tap(find.byKey(const Key('status-need_help')));
    await tester.pump();
    expect(find.text('Ask for help'), findsOneWidget);
    await tester.enterText(find.byKey(const Key('statusNote')), '  Flat tyre at the bridge  ');
    await tester.tap(find.byKey(const Key('setStatus')));
    await tester.pump();
    expect(chosen.single.status, StatusKind.needHelp);
    expect(chosen.single.text, 'Flat tyre at the bridge');
  });

  testWidgets('an empty note is no note', (tester) async {
    await pumpSheet(tester);
    await tester.tap(find.byKey(const Key('status-on_my_way')));
    await tester.pump();
    await tester.enterText(find.byKey(const Key('statusNote')), '   ');
    await tester.tap(find.byKey(const Key('setStatus')));
    await tester.pump();
    expect([chosen.single.status, chosen.single.text], [StatusKind.onMyWay, null]);
  });

  testWidgets('a note over 80 characters is refused', (tester) async {
    await pumpSheet(tester);
    await tester.tap(find.byKey(const Key('status-break')));
    await tester.pump();
    await tester.enterText(find.byKey(const Key('statusNote')), 'x' * 81);
    await tester.tap(find.byKey(const Key('setStatus')));
    await tester.pump();
    expect(find.text('Use at most 80 characters.'), findsOneWidget);
    expect(chosen, isEmpty);
  });

  testWidgets('the current status is preselected and can be cleared', (tester) async {
    await pumpSheet(tester, current: const ParticipantStatus(StatusKind.arrived, text: 'At the car'));
    expect(tester.widget<ChoiceChip>(find.byKey(const Key('status-arrived'))).selected, isTrue);
    expect(find.text('At the car'), findsOneWidget);
    await tester.tap(find.byKey(const Key('clearStatus')));
    await tester.pump();
    expect([chosen.single.status, chosen.single.text], [null, null]);
  });

  test('note rule matches the server', () {
    expect(validateStatusNote(''), isNull);
    expect(validateStatusNote('😀' * 80), isNull, reason: 'code points, not UTF-16 units');
    expect(validateStatusNote('x' * 81), isNotNull);
    expect(validateStatusNote('a\nb'), isNotNull);
    expect(validateStatusNote('\u202Eevil'), isNotNull);
  });
}
