import 'package:flutter/foundation.dart';
import 'package:flutter/material.dart';
import 'package:flutter_riverpod/flutter_riverpod.dart';

import '../../api/rest_client.dart';
import '../../links.dart';
import '../../state/providers.dart';
import 'debug_settings_screen.dart';
import 'join_screen.dart';
import 'map_screen.dart';
import 'share_screen.dart';

/// Start a session in one tap, or open a link someone sent.
class HomeScreen extends ConsumerStatefulWidget {
  const HomeScreen({super.key});

  @override
  ConsumerState<HomeScreen> createState() => _HomeScreenState();
}

class _HomeScreenState extends ConsumerState<HomeScreen> {
  final _name = TextEditingController();
  final _link = TextEditingController();
  double _hours = 6; // the server's default, 360 minutes
  bool _creating = false;
  String? _linkError;

  @override
  void dispose() {
    _name.dispose();
    _link.dispose();
    super.dispose();
  }

  Future<void> _start() async {
    setState(() => _creating = true);
    try {
      final created = await ref
          .read(restClientProvider)
          .createSession(name: _name.text, expiresInMinutes: (_hours * 60).round());
      if (mounted) await Navigator.of(context).push(ShareScreen.route(created));
    } on ApiException catch (e) {
      if (mounted) ScaffoldMessenger.of(context).showSnackBar(SnackBar(content: Text(e.message)));
    } finally {
      if (mounted) setState(() => _creating = false);
    }
  }

  void _openLink() {
    final text = _link.text.trim();
    final sessionId = sessionIdFromText(text);
    setState(() => _linkError = sessionId == null ? 'That is not a locshare join link.' : null);
    if (sessionId != null) {
      Navigator.of(context).push(JoinScreen.route(sessionId, joinLink: text.startsWith('http') ? text : null));
    }
  }

  @override
  Widget build(BuildContext context) {
    final inSession = ref.watch(activeSessionProvider) != null;
    final titleStyle = Theme.of(context).textTheme.titleLarge;
    return Scaffold(
      appBar: AppBar(
        title: const Text('locshare'),
        actions: [
          if (kDebugMode)
            IconButton(
              tooltip: 'Developer settings',
              icon: const Icon(Icons.settings),
              onPressed: () => Navigator.of(context).push(DebugSettingsScreen.route()),
            ),
        ],
      ),
      body: ListView(
        padding: const EdgeInsets.all(16),
        children: [
          const Text('See each other on a live map. One link, no accounts, nothing kept afterwards.'),
          if (inSession)
            Card(
              child: ListTile(
                leading: const Icon(Icons.map),
                title: const Text('You are in a session'),
                subtitle: const Text('Back to the live map'),
                onTap: () => Navigator.of(context).push(MapScreen.route()),
              ),
            ),
          const SizedBox(height: 16),
          Text('Start a session', style: titleStyle),
          TextField(
            controller: _name,
            maxLength: 100,
            decoration: const InputDecoration(labelText: 'Name (optional)', hintText: 'e.g. Saturday hike'),
          ),
          Text('Lasts ${_hours.round()} h'),
          Slider(
            value: _hours,
            min: 1,
            max: 24,
            divisions: 23,
            label: '${_hours.round()} h',
            onChanged: (value) => setState(() => _hours = value),
          ),
          FilledButton.icon(
            onPressed: _creating ? null : _start,
            icon: const Icon(Icons.add_location_alt),
            label: Text(_creating ? 'Starting…' : 'Start a session'),
          ),
          const SizedBox(height: 32),
          Text('Join with a link', style: titleStyle),
          TextField(
            controller: _link,
            keyboardType: TextInputType.url,
            autocorrect: false,
            decoration: InputDecoration(labelText: 'Paste the link you received', errorText: _linkError),
            onSubmitted: (_) => _openLink(),
          ),
          const SizedBox(height: 8),
          OutlinedButton(onPressed: _openLink, child: const Text('Open')),
        ],
      ),
    );
  }
}
