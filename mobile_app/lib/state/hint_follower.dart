// Whether the map camera follows the server's viewport hints. It does until the
// user pans or zooms by hand; "Fit all" resumes following.
import 'package:flutter_map/flutter_map.dart' show MapEventSource;

import '../api/protocol.dart';

class HintFollower {
  bool _following = true;
  ViewportHint? _latest;

  bool get following => _following;

  /// The most recent hint, followed or not.
  ViewportHint? get latest => _latest;

  /// Records a hint from the server (null: nobody shares a location). Returns the
  /// hint the camera should move to now, or null to leave the camera alone.
  ViewportHint? onHint(ViewportHint? hint) {
    _latest = hint;
    return _following ? hint : null;
  }

  /// The user moved the map: their view wins over the server's hints.
  void onUserGesture() => _following = false;

  /// "Center on me" or focusing one participant: a deliberate view, not a hint.
  void stopFollowing() => _following = false;

  /// "Fit all": follow again, starting with the latest hint (if any).
  ViewportHint? fitAll() {
    _following = true;
    return _latest;
  }
}

/// True for camera moves caused by a person (drag, pinch, fling, double-tap,
/// scroll wheel, keyboard), false for our own animated moves (MapController),
/// layout changes and other programmatic moves.
bool isUserCameraSource(MapEventSource source) => switch (source) {
      MapEventSource.mapController ||
      MapEventSource.fitCamera ||
      MapEventSource.custom ||
      MapEventSource.interactiveFlagsChanged ||
      MapEventSource.nonRotatedSizeChange =>
        false,
      _ => true,
    };
