import 'package:flutter_map/flutter_map.dart' show MapEventSource;
import 'package:flutter_test/flutter_test.dart';
import 'package:locshare_app/api/protocol.dart';
import 'package:locshare_app/state/hint_follower.dart';

import 'fixtures.dart';

ViewportHint hint(double zoom) => ViewportHint.fromJson({...viewport, 'zoom': zoom});

void main() {
  test('follows hints until the user moves the map', () {
    final follower = HintFollower();
    expect(follower.onHint(hint(10))?.zoom, 10);
    follower.onUserGesture();
    expect(follower.following, isFalse);
    expect(follower.onHint(hint(11)), isNull);
    expect(follower.latest?.zoom, 11); // remembered for "Fit all"
  });

  test('"Fit all" resumes following with the latest hint', () {
    final follower = HintFollower()..onUserGesture();
    follower.onHint(hint(12));
    expect(follower.fitAll()?.zoom, 12);
    expect(follower.following, isTrue);
    expect(follower.onHint(hint(13))?.zoom, 13);
  });

  test('"Fit all" without any hint still resumes following', () {
    final follower = HintFollower()..stopFollowing();
    expect(follower.fitAll(), isNull);
    expect(follower.following, isTrue);
  });

  test('nobody sharing (null hint) moves nothing', () {
    final follower = HintFollower()..onHint(hint(9));
    expect(follower.onHint(null), isNull);
    expect(follower.latest, isNull);
  });

  test('only gestures count as the user moving the map', () {
    for (final source in [MapEventSource.mapController, MapEventSource.nonRotatedSizeChange, MapEventSource.fitCamera]) {
      expect(isUserCameraSource(source), isFalse, reason: '$source');
    }
    for (final source in [
      MapEventSource.onDrag,
      MapEventSource.onMultiFinger,
      MapEventSource.flingAnimationController,
      MapEventSource.doubleTapZoomAnimationController,
      MapEventSource.scrollWheel,
    ]) {
      expect(isUserCameraSource(source), isTrue, reason: '$source');
    }
  });
}
