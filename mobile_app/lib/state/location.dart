// Location permission and platform settings (geolocator).
import 'package:flutter/foundation.dart';
import 'package:geolocator/geolocator.dart';

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

/// Fixes at about the send interval, kept alive in the background.
LocationSettings locationSettings(Duration interval) {
  switch (defaultTargetPlatform) {
    case TargetPlatform.android:
      return AndroidSettings(
        accuracy: LocationAccuracy.high,
        intervalDuration: interval,
        foregroundNotificationConfig: const ForegroundNotificationConfig(
          notificationTitle: 'Sharing your location',
          notificationText: 'Your group sees where you are until you leave the session.',
          enableWakeLock: true,
          setOngoing: true,
        ),
      );
    case TargetPlatform.iOS:
      return AppleSettings(
        accuracy: LocationAccuracy.high,
        pauseLocationUpdatesAutomatically: false,
        showBackgroundLocationIndicator: true,
        allowBackgroundLocationUpdates: true,
      );
    default:
      return const LocationSettings(accuracy: LocationAccuracy.high);
  }
}
