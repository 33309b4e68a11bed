import 'dart:convert';

import 'package:flutter/material.dart';
import 'package:flutter_riverpod/flutter_riverpod.dart';
import 'package:flutter_test/flutter_test.dart';
import 'package:http/http.dart' as http;
import 'package:http/testing.dart';
import 'package:locshare_app/api/rest_client.dart';
import 'package:locshare_app/links.dart';
import 'package:locshare_app/state/providers.dart';
import 'package:locshare_app/ui/screens/join_screen.dart';

const sessionId = '5e55e55e-0000-4000-8000-00000000000f';

void main() {
  late List<http.Request> requests;

  Future<void> pumpJoinScreen(WidgetTester tester) async {
    requests = [];
    final client = MockClient((request) async {
      requests.add(request);
      return http.Response(
        jsonEncode({
          'id': sessionId,
          'name': 'Saturday hike',
          'created_at': '2026-11-20T11:00:00.000Z',
          'expires_at': '2026-11-20T17:00:00.000Z',
          'participant_count': 2,
          'max_participants': 50,
          'is_active': true,
          'ended_reason': null,
        }),
        200,
        headers: {'content-type': 'application/json'},
      );
    });
    await tester.pumpWidget(ProviderScope(
      overrides: [
        restClientProvider.overrideWithValue(RestClient(Uri.parse('http://locshare.test'), client: client)),
      ],
      child: const MaterialApp(home: JoinScreen(sessionId: sessionId)),
    ));
    await tester.pumpAndSettle();
  }

  Future<void> submit(WidgetTester tester, String name) async {
    await tester.enterText(find.byKey(const Key('displayName')), name);
    await tester.tap(find.byKey(const Key('join')));
    await tester.pumpAndSettle();
  }

  testWidgets('shows the session being joined', (tester) async {
    await pumpJoinScreen(tester);
    expect(find.text('Saturday hike'), findsOneWidget);
    expect(requests.single.method, 'GET');
  });

  testWidgets('an empty name is refused', (tester) async {
    await pumpJoinScreen(tester);
    await submit(tester, '   ');
    expect(find.text('Enter a name so the others know who you are.'), findsOneWidget);
    expect(requests.where((r) => r.method == 'POST'), isEmpty);
  });

  testWidgets('a name over 100 characters is refused', (tester) async {
    await pumpJoinScreen(tester);
    await submit(tester, 'x' * 101);
    expect(find.text('Use at most 100 characters.'), findsOneWidget);
    expect(requests.where((r) => r.method == 'POST'), isEmpty);
  });

  test('display name rule matches the server', () {
    expect(validateDisplayName('Ada'), isNull);
    expect(validateDisplayName('  ${'é' * 100}  '), isNull);
    expect(validateDisplayName('😀' * 100), isNull, reason: 'code points, not UTF-16 units');
    expect(validateDisplayName('a\nb'), isNotNull);
  });

  test('join links', () {
    expect(sessionIdFromLink(Uri.parse('https://locshare.example.org/join/$sessionId')), sessionId);
    expect(sessionIdFromLink(Uri.parse('locshare://join/$sessionId')), sessionId);
    expect(sessionIdFromLink(Uri.parse('https://example.org/other/$sessionId')), isNull);
    expect(sessionIdFromLink(Uri.parse('locshare://join/not-a-session')), isNull);
    expect(sessionIdFromText('  ${sessionId.toUpperCase()} '), sessionId);
  });
}
