// Location permission and platform settings (geolocator).
import 'package:flutter/foundation.dart';
import 'package:geolocator/geolocator.dart';

import '../api/protocol.dart' show LocationUpdate;
import 'pacing.dart';

enum LocationAccess { granted, denied, deniedForever, serviceDisabled }

LocationAccess _fromPermission(LocationPermission permission) => switch (permission) {
      LocationPermission.whileInUse || LocationPermission.always => LocationAccess.granted,
      LocationPermission.deniedForever => LocationAccess.deniedForever,
      LocationPermission.denied || LocationPermission.unableToDetermine => LocationAccess.denied,
    };

/// The current state, without prompting.
Future<LocationAccess> checkLocationAccess() async {
  final access = _fromPermission(await Geolocator.checkPermission());
  if (access != LocationAccess.granted) return access;
  return await Geolocator.isLocationServiceEnabled() ? access : LocationAccess.serviceDisabled;
}

/// Shows the system prompt if the user has not decided yet. "While in use" is
/// enough: sharing continues in the background through a foreground service
/// (Android) or background location updates with the blue indicator (iOS).
Future<LocationAccess> requestLocationAccess() async {
  var permission = await Geolocator.checkPermission();
  if (permission == LocationPermission.denied) {
    permission = await Geolocator.requestPermission();
  }
  final access = _fromPermission(permission);
  if (access != LocationAccess.granted) return access;
  return await Geolocator.isLocationServiceEnabled() ? access : LocationAccess.serviceDisabled;
}

LocationAccuracy _accuracy(FixPrecision precision) => switch (precision) {
      FixPrecision.high => LocationAccuracy.high,
      FixPrecision.balanced => LocationAccuracy.medium,
      FixPrecision.lowPower => LocationAccuracy.low,
    };

/// The platform request for [profile] (README.md, "Location settings per
/// reason"), kept alive in the background: a foreground service with a
/// notification on Android, background updates with the blue indicator on iOS.
/// iOS has no fix interval: there the send timer alone sets the pace.
LocationSettings locationSettings(LocationProfile profile) {
  final accuracy = _accuracy(profile.precision);
  switch (defaultTargetPlatform) {
    case TargetPlatform.android:
      return AndroidSettings(
        accuracy: accuracy,
        distanceFilter: profile.distanceFilterM,
        intervalDuration: profile.interval,
        foregroundNotificationConfig: const ForegroundNotificationConfig(
          notificationTitle: 'Sharing your location',
          notificationText: 'Your group sees where you are until you leave the session.',
          enableWakeLock: true,
          setOngoing: true,
        ),
      );
    case TargetPlatform.iOS:
      return AppleSettings(
        accuracy: accuracy,
        distanceFilter: profile.distanceFilterM,
        // Pausing would stop background updates until the app is opened again.
        pauseLocationUpdatesAutomatically: false,
        showBackgroundLocationIndicator: true,
        allowBackgroundLocationUpdates: true,
      );
    default:
      return LocationSettings(accuracy: accuracy, distanceFilter: profile.distanceFilterM);
  }
}

/// How long `locate_now` waits for its fresh fix before sending the latest one.
const freshFixTimeout = Duration(seconds: 10);

/// geolocator on the device.
class GeolocatorSource implements LocationSource {
  const GeolocatorSource();

  @override
  Stream<Position> watch(LocationProfile profile) =>
      Geolocator.getPositionStream(locationSettings: locationSettings(profile));

  @override
  Future<Position> freshFix() => Geolocator.getCurrentPosition(
        locationSettings: const LocationSettings(accuracy: LocationAccuracy.high, timeLimit: freshFixTimeout),
      );
}

/// A platform fix as a `location_update`, or null if the position is unusable.
/// geolocator reports a value the platform did not provide as 0.0 rather than
/// null (heading and speed then with a 0.0 accuracy): those are sent as unknown,
/// not as "perfectly accurate", "due north" or "standing still".
LocationUpdate? locationUpdateFromFix(Position fix) => LocationUpdate.fromFix(
      fix.latitude,
      fix.longitude,
      accuracy: fix.accuracy > 0 ? fix.accuracy : null,
      heading: fix.heading != 0 || fix.headingAccuracy > 0 ? fix.heading : null,
      speed: fix.speed != 0 || fix.speedAccuracy > 0 ? fix.speed : null,
      timestamp: fix.timestamp,
    );
