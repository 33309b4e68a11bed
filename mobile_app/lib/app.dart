// The app shell: theme, navigation, and join links
// (`https://<host>/join/<id>` and `locshare://join/<id>`).
import 'dart:async';

import 'package:app_links/app_links.dart';
import 'package:flutter/material.dart';
import 'package:flutter_riverpod/flutter_riverpod.dart';

import 'links.dart';
import 'state/providers.dart';
import 'ui/navigation.dart';
import 'ui/screens/home_screen.dart';
import 'ui/screens/join_screen.dart';
import 'ui/screens/map_screen.dart';

class LocshareApp extends ConsumerStatefulWidget {
  const LocshareApp({super.key});

  @override
  ConsumerState<LocshareApp> createState() => _LocshareAppState();
}

class _LocshareAppState extends ConsumerState<LocshareApp> {
  final _navigator = GlobalKey<NavigatorState>();
  StreamSubscription<Uri>? _links;
  late final AppLifecycleListener _lifecycle;

  @override
  void initState() {
    super.initState();
    // app_links delivers the link that launched the app on this stream too.
    _links = AppLinks().uriLinkStream.listen(_openLink);
    // The session needs the lifecycle even while the map screen is not built:
    // `visibility`, and no new location request from the background.
    final session = ref.read(sessionControllerProvider.notifier);
    session.setAppLifecycle(WidgetsBinding.instance.lifecycleState ?? AppLifecycleState.resumed);
    _lifecycle = AppLifecycleListener(onStateChange: session.setAppLifecycle);
  }

  @override
  void dispose() {
    _lifecycle.dispose();
    _links?.cancel();
    super.dispose();
  }

  void _openLink(Uri uri) {
    final sessionId = sessionIdFromLink(uri);
    if (sessionId == null) return;
    final navigator = _navigator.currentState;
    if (navigator == null) {
      // Launched by the link: the navigator is not built yet.
      WidgetsBinding.instance.addPostFrameCallback((_) => _openLink(uri));
      return;
    }
    final active = ref.read(activeSessionProvider);
    final route = active?.joined.sessionId == sessionId
        ? MapScreen.route()
        : JoinScreen.route(sessionId, joinLink: uri.scheme == 'locshare' ? null : uri.toString());
    navigator
      ..popUntil((r) => r.isFirst)
      ..push(route);
  }

  @override
  Widget build(BuildContext context) {
    return MaterialApp(
      title: 'locshare',
      navigatorKey: _navigator,
      navigatorObservers: [pageRouteObserver],
      theme: ThemeData(colorSchemeSeed: const Color(0xFF2E86C1), useMaterial3: true),
      darkTheme: ThemeData(
        colorSchemeSeed: const Color(0xFF2E86C1),
        brightness: Brightness.dark,
        useMaterial3: true,
      ),
      home: const HomeScreen(),
    );
  }
}
