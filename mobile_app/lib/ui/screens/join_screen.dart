import 'dart:math' as math;

import 'package:flutter/material.dart';
import 'package:flutter/services.dart';
import 'package:flutter_riverpod/flutter_riverpod.dart';

import '../../api/rest_client.dart';
import '../../config.dart';
import '../../state/providers.dart';
import '../format.dart';
import '../widgets/avatar_marker.dart';
import 'map_screen.dart';
import 'permission_screen.dart';

const displayNameMaxChars = 100;

/// The server's rule: 1 to 100 characters after trimming, counted in code points
/// (as Python counts them), without control characters.
String? validateDisplayName(String? value) {
  final name = value?.trim() ?? '';
  if (name.isEmpty) return 'Enter a name so the others know who you are.';
  if (name.runes.length > displayNameMaxChars) return 'Use at most $displayNameMaxChars characters.';
  if (name.runes.any((r) => r < 0x20 || (r >= 0x7F && r < 0xA0) || r == 0x2028 || r == 0x2029)) {
    return 'Remove line breaks and other control characters.';
  }
  return null;
}

/// Name and colour, then join: no account.
class JoinScreen extends ConsumerStatefulWidget {
  const JoinScreen({super.key, required this.sessionId, this.joinLink});

  final String sessionId;

  /// The link to invite others with (null: derived from the API address).
  final String? joinLink;

  static Route<void> route(String sessionId, {String? joinLink}) =>
      MaterialPageRoute(builder: (_) => JoinScreen(sessionId: sessionId, joinLink: joinLink));

  @override
  ConsumerState<JoinScreen> createState() => _JoinScreenState();
}

class _JoinScreenState extends ConsumerState<JoinScreen> {
  final _form = GlobalKey<FormState>();
  final _name = TextEditingController();
  String _color = avatarPalette[math.Random().nextInt(avatarPalette.length)];
  bool _joining = false;
  String? _error;

  @override
  void dispose() {
    _name.dispose();
    super.dispose();
  }

  Future<void> _join() async {
    setState(() => _error = null);
    if (!(_form.currentState?.validate() ?? false)) return;
    setState(() => _joining = true);
    try {
      if (ref.read(activeSessionProvider) != null) {
        await ref.read(sessionControllerProvider.notifier).leave(); // one session at a time
      }
      final joined = await ref
          .read(restClientProvider)
          .join(widget.sessionId, displayName: _name.text.trim(), avatarColor: _color);
      final link = widget.joinLink ??
          ref.read(configProvider).apiBase.resolve('/join/${widget.sessionId}').toString();
      ref.read(activeSessionProvider.notifier).set(ActiveSession(joined: joined, joinLink: link));
      if (mounted) await Navigator.of(context).pushReplacement(PermissionScreen.route());
    } on ApiException catch (e) {
      if (mounted) setState(() => _error = _describe(e));
    } finally {
      if (mounted) setState(() => _joining = false);
    }
  }

  static String _describe(ApiException e) => switch (e.status) {
        0 => 'Cannot reach the server. Check your connection and try again.',
        404 => 'This session does not exist. Check the link.',
        409 => 'This session is full.',
        410 => 'This session has ended.',
        _ => e.message,
      };

  @override
  Widget build(BuildContext context) {
    final details = ref.watch(sessionDetailsProvider(widget.sessionId));
    final active = ref.watch(activeSessionProvider);
    final info = details.valueOrNull;
    final error = details.error;
    // Joining reports any real problem; the header is only a courtesy.
    final String? problem = info != null && !info.isActive
        ? endedMessage(info.endedReason)
        : error is ApiException && error.isNotFound
            ? 'This session does not exist. Check the link.'
            : null;

    return Scaffold(
      appBar: AppBar(title: const Text('Join a session')),
      body: ListView(
        padding: const EdgeInsets.all(16),
        children: [
          if (details.isLoading) const LinearProgressIndicator(),
          if (info != null && info.isActive)
            ListTile(
              contentPadding: EdgeInsets.zero,
              title: Text(info.name, style: Theme.of(context).textTheme.titleLarge),
              subtitle: Text(
                '${info.participantCount} of ${info.maxParticipants} people · '
                'ends at ${timeOfDay(context, info.expiresAt)}',
              ),
            ),
          if (problem != null)
            Text(problem, style: TextStyle(color: Theme.of(context).colorScheme.error))
          else if (active?.joined.sessionId == widget.sessionId)
            FilledButton(
              onPressed: () => Navigator.of(context).pushReplacement(MapScreen.route()),
              child: const Text('You are in this session: open the map'),
            )
          else
            _buildForm(context, leavesCurrent: active != null),
        ],
      ),
    );
  }

  Widget _buildForm(BuildContext context, {required bool leavesCurrent}) => Form(
        key: _form,
        child: Column(
          crossAxisAlignment: CrossAxisAlignment.stretch,
          children: [
            TextFormField(
              key: const Key('displayName'),
              controller: _name,
              autofocus: true,
              textCapitalization: TextCapitalization.words,
              // Show the counter, but let the validator explain the limit.
              maxLength: displayNameMaxChars,
              maxLengthEnforcement: MaxLengthEnforcement.none,
              decoration: const InputDecoration(labelText: 'Your name', hintText: 'Shown to the others'),
              validator: validateDisplayName,
              onFieldSubmitted: (_) => _join(),
            ),
            const Text('Your colour'),
            const SizedBox(height: 8),
            Wrap(spacing: 8, runSpacing: 8, children: [
              for (final hex in avatarPalette)
                Semantics(
                  selected: hex == _color,
                  label: 'Colour $hex',
                  child: GestureDetector(
                    onTap: () => setState(() => _color = hex),
                    child: CircleAvatar(
                      radius: 18,
                      backgroundColor: colorFromHex(hex),
                      child: hex == _color ? const Icon(Icons.check, color: Colors.white) : null,
                    ),
                  ),
                ),
            ]),
            if (leavesCurrent) const Text('\nJoining leaves the session you are in now.'),
            const SizedBox(height: 24),
            FilledButton(
              key: const Key('join'),
              onPressed: _joining ? null : _join,
              child: Text(_joining ? 'Joining…' : 'Join'),
            ),
            if (_error != null)
              Text('\n$_error', style: TextStyle(color: Theme.of(context).colorScheme.error)),
          ],
        ),
      );
}
