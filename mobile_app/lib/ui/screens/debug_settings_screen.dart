import 'package:flutter/foundation.dart';
import 'package:flutter/material.dart';
import 'package:flutter_riverpod/flutter_riverpod.dart';

import '../../config.dart';

/// Debug builds only: point the app at another server without rebuilding.
/// Release builds use the --dart-define value they were built with.
class DebugSettingsScreen extends ConsumerStatefulWidget {
  const DebugSettingsScreen({super.key});

  static Route<void> route() => MaterialPageRoute(builder: (_) => const DebugSettingsScreen());

  @override
  ConsumerState<DebugSettingsScreen> createState() => _DebugSettingsScreenState();
}

class _DebugSettingsScreenState extends ConsumerState<DebugSettingsScreen> {
  final _form = GlobalKey<FormState>();
  late final _api = TextEditingController(text: ref.read(configProvider).apiBase.toString());

  @override
  void dispose() {
    _api.dispose();
    super.dispose();
  }

  void _save() {
    if (!(_form.currentState?.validate() ?? false)) return;
    ref.read(configProvider.notifier).overrideApiBase(parseApiBase(_api.text));
    Navigator.of(context).pop();
  }

  @override
  Widget build(BuildContext context) {
    if (!kDebugMode) return const Scaffold();
    return Scaffold(
      appBar: AppBar(title: const Text('Developer settings')),
      body: Form(
        key: _form,
        child: ListView(
          padding: const EdgeInsets.all(16),
          children: [
            TextFormField(
              controller: _api,
              keyboardType: TextInputType.url,
              autocorrect: false,
              decoration: const InputDecoration(
                labelText: 'API base URL',
                helperText: 'Android emulator: http://10.0.2.2:8080 · iOS simulator: http://localhost:8080',
              ),
              validator: (value) => parseApiBase(value ?? '') == null ? 'An http(s) URL' : null,
            ),
            const SizedBox(height: 8),
            const Text('Applies to sessions created or joined from now on.'),
            const SizedBox(height: 24),
            FilledButton(onPressed: _save, child: const Text('Save')),
            TextButton(
              onPressed: () => _api.text = defaultApiBase,
              child: const Text('Back to the build default'),
            ),
          ],
        ),
      ),
    );
  }
}
