// Backend and map tiles, chosen at build time:
//   flutter run --dart-define=LOCSHARE_API=http://10.0.2.2:8080 \
//               --dart-define=LOCSHARE_TILE_URL=https://tiles.example.org/{z}/{x}/{y}.png
// Debug builds can override the API address at runtime (developer settings).
import 'package:flutter/foundation.dart';
import 'package:flutter_riverpod/flutter_riverpod.dart';

// 10.0.2.2 is the host machine as seen from the Android emulator.
const String defaultApiBase = String.fromEnvironment('LOCSHARE_API', defaultValue: 'http://10.0.2.2:8080');

// The OpenStreetMap Foundation's tiles are fine for development; production
// deployments should use their own tile server or a provider (see README).
const String tileUrl =
    String.fromEnvironment('LOCSHARE_TILE_URL', defaultValue: 'https://tile.openstreetmap.org/{z}/{x}/{y}.png');
const String tileAttribution =
    String.fromEnvironment('LOCSHARE_TILE_ATTRIBUTION', defaultValue: 'OpenStreetMap contributors');

/// Sent in the tiles' User-Agent, as the OSM tile usage policy asks.
const String appPackageName = 'org.locshare.app';

@immutable
class AppConfig {
  const AppConfig(this.apiBase);

  final Uri apiBase;
}

class ConfigNotifier extends Notifier<AppConfig> {
  @override
  AppConfig build() => AppConfig(Uri.parse(defaultApiBase));

  /// Debug builds only: release builds talk to the backend they were built for.
  void overrideApiBase(Uri? apiBase) {
    if (kDebugMode && apiBase != null) state = AppConfig(apiBase);
  }
}

final configProvider = NotifierProvider<ConfigNotifier, AppConfig>(ConfigNotifier.new);

/// An http(s) URL typed by a developer, or null.
Uri? parseApiBase(String text) {
  final uri = Uri.tryParse(text.trim());
  final ok = uri != null && (uri.scheme == 'http' || uri.scheme == 'https') && uri.host.isNotEmpty;
  return ok ? uri : null;
}
