import 'package:flutter/material.dart';

import '../../state/session_reducer.dart';

/// Shown over the map while the WebSocket is down; the map keeps the last
/// known state meanwhile.
class OfflineBanner extends StatelessWidget {
  const OfflineBanner({super.key, required this.phase});

  final ConnectionPhase phase;

  @override
  Widget build(BuildContext context) {
    if (phase == ConnectionPhase.online) return const SizedBox.shrink();
    final scheme = Theme.of(context).colorScheme;
    final text = phase == ConnectionPhase.connecting
        ? 'Connecting…'
        : 'Offline: positions may be out of date. Reconnecting…';
    return Semantics(
      liveRegion: true,
      child: Material(
        color: scheme.errorContainer,
        child: Padding(
          padding: const EdgeInsets.symmetric(horizontal: 16, vertical: 8),
          child: Row(
            children: [
              Icon(Icons.cloud_off, size: 18, color: scheme.onErrorContainer),
              const SizedBox(width: 8),
              Expanded(child: Text(text, style: TextStyle(color: scheme.onErrorContainer))),
            ],
          ),
        ),
      ),
    );
  }
}
