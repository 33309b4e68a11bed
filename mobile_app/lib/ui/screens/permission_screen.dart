import 'package:flutter/material.dart';
import 'package:flutter_riverpod/flutter_riverpod.dart';
import 'package:geolocator/geolocator.dart';

import '../../state/location.dart';
import '../../state/providers.dart';
import 'map_screen.dart';

/// Explains what is shared, with whom and for how long, before the system
/// prompt appears: people say yes to a prompt they understand.
class PermissionScreen extends ConsumerStatefulWidget {
  const PermissionScreen({super.key});

  static Route<void> route() => MaterialPageRoute(builder: (_) => const PermissionScreen());

  @override
  ConsumerState<PermissionScreen> createState() => _PermissionScreenState();
}

class _PermissionScreenState extends ConsumerState<PermissionScreen> {
  LocationAccess? _access;

  @override
  void initState() {
    super.initState();
    // Allowed before (an earlier session): nothing to explain.
    checkLocationAccess().then((access) {
      if (access == LocationAccess.granted && mounted) _openMap();
    });
  }

  Future<void> _allow() async {
    final access = await requestLocationAccess();
    if (!mounted) return;
    setState(() => _access = access);
    if (access == LocationAccess.granted) _openMap();
  }

  void _openMap() => Navigator.of(context).pushReplacement(MapScreen.route());

  @override
  Widget build(BuildContext context) {
    final seconds = ref.watch(sessionControllerProvider.select((s) => s.limits.updateIntervalS));
    final (String? problem, Widget? fix) = switch (_access) {
      LocationAccess.deniedForever => (
          'Location is blocked for locshare. Allow it in the system settings.',
          const TextButton(onPressed: Geolocator.openAppSettings, child: Text('Open settings')),
        ),
      LocationAccess.serviceDisabled => (
          'Location services are turned off on this device.',
          const TextButton(onPressed: Geolocator.openLocationSettings, child: Text('Open location settings')),
        ),
      LocationAccess.denied => ('Location was not allowed. You can still see the others.', null),
      _ => (null, null),
    };
    return Scaffold(
      appBar: AppBar(title: const Text('Share your location')),
      body: ListView(
        padding: const EdgeInsets.all(24),
        children: [
          Icon(Icons.location_on, size: 64, color: Theme.of(context).colorScheme.primary),
          Text(
            'locshare needs your location to show you on the group map.',
            style: Theme.of(context).textTheme.titleMedium,
            textAlign: TextAlign.center,
          ),
          const SizedBox(height: 16),
          const ListTile(leading: Icon(Icons.group), title: Text('Only the people in this session see it.')),
          ListTile(
            leading: const Icon(Icons.timer),
            title: Text(
              'It is sent every ${seconds.round()} s while you are in the session, also with the app in '
              'the background (Android shows a notification, iPhone a blue indicator).',
            ),
          ),
          const ListTile(
            leading: Icon(Icons.delete_outline),
            title: Text('The server keeps only your latest position, forgets it soon after you stop '
                'sharing, and keeps nothing once the session ends.'),
          ),
          const ListTile(leading: Icon(Icons.logout), title: Text('Leaving the session stops it at once.')),
          const SizedBox(height: 16),
          if (problem != null)
            Text(problem, style: TextStyle(color: Theme.of(context).colorScheme.error), textAlign: TextAlign.center),
          if (fix != null) fix,
          FilledButton(onPressed: _allow, child: const Text('Allow location')),
          TextButton(onPressed: _openMap, child: const Text('Not now: just watch the map')),
        ],
      ),
    );
  }
}
