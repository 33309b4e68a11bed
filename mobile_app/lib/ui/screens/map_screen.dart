import 'dart:async';
import 'dart:math' as math;

import 'package:flutter/material.dart';
import 'package:flutter_map/flutter_map.dart';
import 'package:flutter_riverpod/flutter_riverpod.dart';
import 'package:latlong2/latlong.dart';

import '../../api/protocol.dart';
import '../../api/rest_client.dart';
import '../../config.dart';
import '../../state/hint_follower.dart';
import '../../state/location.dart';
import '../../state/providers.dart';
import '../../state/session_reducer.dart';
import '../format.dart';
import '../navigation.dart';
import '../widgets/avatar_marker.dart';
import '../widgets/convoy_panel.dart';
import '../widgets/need_help_banner.dart';
import '../widgets/offline_banner.dart';
import '../widgets/place_form.dart';
import '../widgets/place_visuals.dart';
import '../widgets/places_list.dart';
import '../widgets/status_sheet.dart';
import 'join_screen.dart';
import 'share_screen.dart';

/// The live map: everyone's avatar, accuracy circle, presence and status; the
/// session's places, the route and the convoy. The camera follows the server's
/// viewport hints until the user moves the map.
class MapScreen extends ConsumerStatefulWidget {
  const MapScreen({super.key});

  static Route<void> route() => MaterialPageRoute(builder: (_) => const MapScreen());

  @override
  ConsumerState<MapScreen> createState() => _MapScreenState();
}

class _MapScreenState extends ConsumerState<MapScreen> with SingleTickerProviderStateMixin, RouteAware {
  final _map = MapController();
  // Made once: a TileLayer built in build() brings a new tile provider (and HTTP
  // client) on every rebuild, and only the last one is ever disposed.
  final _tiles = TileLayer(urlTemplate: tileUrl, userAgentPackageName: appPackageName);
  final _follower = HintFollower();
  late final AnimationController _camera;
  late final AppLifecycleListener _lifecycle;
  late final Timer _clock;
  VoidCallback? _cameraStep;
  DateTime _now = DateTime.now();
  bool _mapReady = false;
  Size? _reportedSize;
  bool _subscribed = false;

  // The notifier outlives rebuilds of its state; kept for dispose(), where ref is gone.
  late final SessionController _controller;

  @override
  void initState() {
    super.initState();
    _controller = ref.read(sessionControllerProvider.notifier);
    _camera = AnimationController(vsync: this, duration: const Duration(milliseconds: 800));
    _lifecycle = AppLifecycleListener(onResume: () => _controller.onResumed());
    // "last seen 4 min ago" labels age while nothing else changes.
    _clock = Timer.periodic(const Duration(seconds: 15), (_) => setState(() => _now = DateTime.now()));
    WidgetsBinding.instance.addPostFrameCallback((_) async {
      await _controller.startSharing();
      // After the location prompt: Android 13+ and iOS ask before showing alerts
      // (and Android's location notification needs it too).
      if (mounted) await ref.read(localNotificationsProvider).requestPermission();
    });
  }

  @override
  void didChangeDependencies() {
    super.didChangeDependencies();
    final route = ModalRoute.of(context);
    if (!_subscribed && route is PageRoute<dynamic>) {
      _subscribed = true;
      pageRouteObserver.subscribe(this, route); // calls didPush()
    }
  }

  @override
  void dispose() {
    pageRouteObserver.unsubscribe(this);
    _controller.setMapOnTop(this, false); // removed without a pop (replaced)
    _lifecycle.dispose();
    _clock.cancel();
    _camera.dispose();
    _map.dispose();
    super.dispose();
  }

  // --- visibility: the map is on screen while this page is on top ---------------------
  @override
  void didPush() => _controller.setMapOnTop(this, true);

  @override
  void didPopNext() => _controller.setMapOnTop(this, true);

  @override
  void didPushNext() => _controller.setMapOnTop(this, false);

  @override
  void didPop() => _controller.setMapOnTop(this, false);

  // --- camera -------------------------------------------------------------------------
  void _onMapReady() {
    _mapReady = true;
    final hint = _follower.onHint(ref.read(sessionControllerProvider).viewport);
    if (hint != null) _moveTo(LatLng(hint.centerLat, hint.centerLng), hint.zoom, animate: false);
  }

  void _onMapEvent(MapEvent event) {
    if (event is MapEventWithMove && isUserCameraSource(event.source)) {
      _camera.stop();
      if (_follower.following) setState(_follower.onUserGesture);
    }
  }

  void _followHint(ViewportHint? hint) {
    // The server fitted centre and zoom to this screen (viewport_size already).
    if (hint != null) _moveTo(LatLng(hint.centerLat, hint.centerLng), hint.zoom);
  }

  void _moveTo(LatLng target, double zoom, {bool animate = true}) {
    if (!_mapReady) return;
    final previous = _cameraStep;
    if (previous != null) _camera.removeListener(previous);
    _camera.stop();
    if (!animate) {
      _map.move(target, zoom);
      return;
    }
    final from = _map.camera;
    var toLng = target.longitude;
    // Take the short way round across the antimeridian.
    if (toLng - from.center.longitude > 180) toLng -= 360;
    if (toLng - from.center.longitude < -180) toLng += 360;
    final lat = Tween(begin: from.center.latitude, end: target.latitude);
    final lng = Tween(begin: from.center.longitude, end: toLng);
    final z = Tween(begin: from.zoom, end: zoom);
    void step() {
      final t = Curves.easeInOutCubic.transform(_camera.value);
      _map.move(LatLng(lat.transform(t), (lng.transform(t) + 180) % 360 - 180), z.transform(t));
    }

    _cameraStep = step;
    _camera
      ..addListener(step)
      ..forward(from: 0);
  }

  /// Follow the hints again, starting with the latest (none while nobody shares).
  void _fitAll() {
    final hint = _follower.fitAll();
    setState(() {});
    _followHint(hint);
  }

  void _focus(LatLng point) {
    setState(_follower.stopFollowing);
    _moveTo(point, _mapReady ? math.max(_map.camera.zoom, 15) : 15);
  }

  /// This device's position: as the server last confirmed it, else the latest fix.
  GeoPoint? _myPosition(SessionView view) {
    final mine = view.me?.location;
    final fix = _controller.lastFix;
    if (mine != null) return GeoPoint(mine.lat, mine.lng);
    if (fix != null) return GeoPoint(fix.latitude, fix.longitude);
    return null;
  }

  void _centerOnMe(SessionView view) {
    final me = _myPosition(view);
    if (me == null) return _snack('Your position is not known yet.');
    _focus(LatLng(me.lat, me.lng));
  }

  // --- actions ------------------------------------------------------------------------
  void _snack(String text) => ScaffoldMessenger.of(context).showSnackBar(SnackBar(content: Text(text)));

  Future<void> _share() async {
    final access = await requestLocationAccess();
    if (access == LocationAccess.granted) return _controller.startSharing();
    _snack(switch (access) {
      LocationAccess.serviceDisabled => 'Turn on location services to share your position.',
      LocationAccess.deniedForever => 'Location is blocked for locshare: allow it in the system settings.',
      _ => 'Location was not allowed. You can still see the others.',
    });
  }

  Future<void> _confirmThen(String title, String body, String action, Future<void> Function() run) async {
    final ok = await showDialog<bool>(
      context: context,
      builder: (context) => AlertDialog(
        title: Text(title),
        content: Text(body),
        actions: [
          TextButton(onPressed: () => Navigator.pop(context, false), child: const Text('Cancel')),
          FilledButton(onPressed: () => Navigator.pop(context, true), child: Text(action)),
        ],
      ),
    );
    if (ok != true || !mounted) return;
    try {
      await run();
    } on ApiException catch (e) {
      if (mounted) _snack('That did not work: ${e.message}');
    }
  }

  /// Sends [message]; says so if it could not go (offline: nothing is queued).
  void _send(ClientMessage message, String whatFailed) {
    if (!_controller.send(message)) _snack('You are offline: $whatFailed');
  }

  Future<void> _addPlaceAt(GeoPoint point, String where) async {
    final draft = await showPlaceForm(context, where: where);
    if (draft != null && mounted) _send(draft.at(point), 'the place was not added.');
  }

  void _addPlaceAtMe(SessionView view) {
    final me = _myPosition(view);
    if (me == null) return _snack('Your position is not known yet.');
    _addPlaceAt(me, 'At your position');
  }

  void _removePlace(Place place) => _confirmThen(
        'Remove "${place.name}"?',
        'It disappears from everyone\'s map.',
        'Remove',
        () async => _send(PlaceRemove(place.placeId), 'the place was not removed.'),
      );

  void _openPlaces() => showModalBottomSheet<void>(
        context: context,
        showDragHandle: true,
        isScrollControlled: true,
        builder: (sheet) => Consumer(builder: (context, ref, _) {
          final view = ref.watch(sessionControllerProvider);
          return SafeArea(
            child: ConstrainedBox(
              constraints: BoxConstraints(maxHeight: MediaQuery.sizeOf(context).height * 0.7),
              child: PlacesList(
                view: view,
                onShow: (place) {
                  Navigator.pop(sheet);
                  final at = place.anchor;
                  _focus(LatLng(at.lat, at.lng));
                },
                onRemove: _removePlace,
                onAddAtMyPosition: _myPosition(view) == null
                    ? null
                    : () {
                        Navigator.pop(sheet);
                        _addPlaceAtMe(view);
                      },
              ),
            ),
          );
        }),
      );

  Future<void> _setStatus(SessionView view) async {
    final choice = await showStatusSheet(context, current: view.me?.status);
    if (choice != null && mounted) _send(SetStatus(choice.status, text: choice.text), 'your status was not sent.');
  }

  void _leave() => _confirmThen(
        'Leave this session?',
        'You stop sharing your location and disappear from the map. You need the link to come back.',
        'Leave',
        () async {
          await _controller.leave();
          if (mounted) Navigator.of(context).popUntil((route) => route.isFirst);
        },
      );

  /// Back to the start screen, optionally straight into joining [rejoin] again.
  void _close({String? rejoin, String? joinLink}) {
    final navigator = Navigator.of(context);
    ref.read(activeSessionProvider.notifier).set(null);
    navigator.popUntil((route) => route.isFirst);
    if (rejoin != null) navigator.push(JoinScreen.route(rejoin, joinLink: joinLink));
  }

  // --- build --------------------------------------------------------------------------
  @override
  Widget build(BuildContext context) {
    ref.listen(
      sessionControllerProvider.select((s) => s.viewport),
      (_, ViewportHint? hint) => _followHint(_follower.onHint(hint)),
    );
    // A place or a status the server refused: say why.
    ref.listen(sessionControllerProvider.select((s) => s.notice), (_, Notice? notice) {
      if (notice != null) _snack(notice.message);
    });
    final active = ref.watch(activeSessionProvider);
    final view = ref.watch(sessionControllerProvider);
    if (active == null) {
      return Scaffold(
        appBar: AppBar(),
        body: Center(child: FilledButton(onPressed: _close, child: const Text('Back to start'))),
      );
    }
    final stopped = view.stopped;
    return Scaffold(
      appBar: AppBar(
        title: Text(view.session?.name ?? 'Connecting…'),
        actions: [
          IconButton(
            tooltip: 'Invite people',
            icon: const Icon(Icons.person_add),
            onPressed: () => Navigator.of(context).push(
              ShareScreen.inviteRoute(title: view.session?.name ?? 'locshare', joinLink: active.joinLink),
            ),
          ),
          IconButton(tooltip: 'Leave session', icon: const Icon(Icons.logout), onPressed: _leave),
        ],
      ),
      body: Column(
        children: [
          OfflineBanner(phase: stopped == null ? view.connection : ConnectionPhase.online),
          NeedHelpBanner(
            people: [
              for (final p in view.needingHelp)
                if (p.userId != view.you?.userId) p,
            ],
            now: _now,
            onShowOnMap: (p) => _focus(LatLng(p.location!.lat, p.location!.lng)),
          ),
          Expanded(
            child: Stack(
              children: [
                LayoutBuilder(builder: (context, constraints) {
                  final size = constraints.biggest;
                  if (size != _reportedSize) {
                    _reportedSize = size;
                    _controller.setViewportSize(size.width, size.height); // only arms a timer
                  }
                  return _buildMap(view);
                }),
                Positioned(
                  left: 8,
                  right: 8,
                  top: 8,
                  child: Align(
                    alignment: Alignment.topLeft,
                    child: ConvoyPanel(view: view, onFocus: (p) => _focus(LatLng(p.location!.lat, p.location!.lng))),
                  ),
                ),
                Positioned(right: 12, bottom: 40, child: _buttons(view)),
                if (stopped != null && stopped != StopReason.left) _stoppedPanel(stopped, view, active),
              ],
            ),
          ),
          _participantStrip(view),
        ],
      ),
    );
  }

  Widget _buildMap(SessionView view) {
    final myId = view.you?.userId;
    final me = view.me;
    // Own avatar last, so it is drawn on top.
    final located = [
      for (final p in view.participants.values)
        if (p.location != null && p.userId != myId) p,
      if (me != null && me.location != null) me,
    ];
    final places = view.places.values.toList();
    final route = view.route;
    // flutter_map draws consecutive points of a line or ring the short way round,
    // so a route across the antimeridian stays one line; LatLng wants -180..180.
    LatLng latLng(GeoPoint p) => LatLng(p.lat, normalizeLongitude(p.lng));
    return FlutterMap(
      mapController: _map,
      options: MapOptions(
        initialCenter: const LatLng(20, 0),
        initialZoom: 2,
        minZoom: 2,
        maxZoom: 19,
        // Hints are north-up; a rotated map would fight them.
        interactionOptions: const InteractionOptions(flags: InteractiveFlag.all & ~InteractiveFlag.rotate),
        onMapReady: _onMapReady,
        onMapEvent: _onMapEvent,
        onLongPress: (_, point) {
          final at = GeoPoint(point.latitude, normalizeLongitude(point.longitude));
          _addPlaceAt(at, positionLabel(at.lat, at.lng));
        },
      ),
      children: [
        _tiles,
        PolygonLayer(polygons: [
          for (final place in places)
            if (place.ring != null)
              Polygon(
                points: [for (final corner in place.ring!) latLng(corner)],
                color: placeColor(place.kind).withAlpha(45),
                borderColor: placeColor(place.kind),
                borderStrokeWidth: 2,
              ),
        ]),
        CircleLayer(circles: [
          for (final place in places)
            if (place.center != null)
              CircleMarker(
                point: latLng(place.center!),
                radius: place.radiusM!,
                useRadiusInMeter: true,
                color: placeColor(place.kind).withAlpha(45),
                borderColor: placeColor(place.kind),
                borderStrokeWidth: 2,
              ),
        ]),
        if (route != null)
          PolylineLayer(polylines: [
            Polyline(
              points: [for (final point in route.line) latLng(point)],
              strokeWidth: 5,
              color: Theme.of(context).colorScheme.primary.withAlpha(200),
            ),
          ]),
        MarkerLayer(markers: [
          for (final place in places)
            Marker(
              point: latLng(place.anchor),
              width: PlaceMarker.size + 12,
              height: PlaceMarker.size + 12,
              child: Tooltip(
                message: '${placeKindLabel(place.kind)}: ${place.name}',
                child: PlaceMarker(place: place, present: view.presentAt(place.placeId).length),
              ),
            ),
        ]),
        CircleLayer(circles: [
          for (final p in located)
            if ((p.location!.accuracy ?? 0) > 0)
              CircleMarker(
                point: LatLng(p.location!.lat, p.location!.lng),
                radius: p.location!.accuracy!,
                useRadiusInMeter: true,
                color: _colorOf(p).withAlpha(40),
                borderColor: _colorOf(p).withAlpha(120),
                borderStrokeWidth: 1,
              ),
        ]),
        MarkerLayer(markers: [
          for (final p in located)
            Marker(
              point: LatLng(p.location!.lat, p.location!.lng),
              width: AvatarMarker.boxWidth,
              height: AvatarMarker.boxHeight,
              child: AvatarMarker(
                name: p.displayName,
                color: _colorOf(p),
                online: p.online,
                stale: p.stale,
                isMe: p.userId == myId,
                caption: p.stale ? 'last seen ${lastSeenLabel(p.lastSeen, _now)}' : null,
              ),
            ),
        ]),
        const SimpleAttributionWidget(source: Text(tileAttribution)),
      ],
    );
  }

  static Color _colorOf(Participant p) => p.stale ? Colors.grey : colorFromHex(p.avatarColor);

  Widget _buttons(SessionView view) => Column(
        crossAxisAlignment: CrossAxisAlignment.end,
        children: [
          if (!view.sharing && view.stopped == null) ...[
            FloatingActionButton.extended(
              heroTag: 'share',
              onPressed: _share,
              icon: const Icon(Icons.location_disabled),
              label: const Text('Share my location'),
            ),
            const SizedBox(height: 12),
          ],
          FloatingActionButton.small(
            heroTag: 'status',
            tooltip: 'My status',
            backgroundColor: view.me?.needsHelp ?? false ? Theme.of(context).colorScheme.errorContainer : null,
            onPressed: view.ready ? () => _setStatus(view) : null,
            child: Icon(statusIcon(view.me?.status?.status ?? StatusKind.onMyWay)),
          ),
          const SizedBox(height: 12),
          FloatingActionButton.small(
            heroTag: 'places',
            tooltip: 'Places',
            onPressed: view.ready ? _openPlaces : null,
            child: const Icon(Icons.place),
          ),
          const SizedBox(height: 12),
          FloatingActionButton.small(
            heroTag: 'fit',
            tooltip: 'Fit all',
            // Highlighted while the camera is not following the hints.
            backgroundColor: _follower.following ? null : Theme.of(context).colorScheme.primaryContainer,
            onPressed: _fitAll,
            child: const Icon(Icons.zoom_out_map),
          ),
          const SizedBox(height: 12),
          // A long press adds a place at this device's position.
          GestureDetector(
            onLongPress: () => _addPlaceAtMe(view),
            child: FloatingActionButton.small(
              heroTag: 'me',
              tooltip: 'Center on me (hold to add a place here)',
              onPressed: () => _centerOnMe(view),
              child: const Icon(Icons.my_location),
            ),
          ),
        ],
      );

  /// Everyone, with presence, including those without a location; tap to focus.
  Widget _participantStrip(SessionView view) {
    final myId = view.you?.userId;
    final people = view.participants.values.toList()
      ..sort((a, b) => a.userId == myId
          ? -1
          : b.userId == myId
              ? 1
              : a.displayName.toLowerCase().compareTo(b.displayName.toLowerCase()));
    String presence(Participant p) => p.stale
        ? 'last seen ${lastSeenLabel(p.lastSeen, _now)}'
        : '${p.online ? 'online' : 'offline'}${p.location == null ? ', no location' : ''}';
    String label(Participant p) {
      final status = p.status;
      final at = [
        for (final arrival in view.arrivals)
          if (arrival.userId == p.userId && view.places[arrival.placeId] != null) view.places[arrival.placeId]!.name,
      ];
      return [
        p.userId == myId ? 'You' : p.displayName,
        if (status != null) statusLine(status),
        if (at.isNotEmpty) 'at ${at.join(', ')}',
        presence(p),
      ].join(' · ');
    }

    return SafeArea(
      top: false,
      child: SizedBox(
        height: 56,
        child: ListView(
          scrollDirection: Axis.horizontal,
          padding: const EdgeInsets.all(8),
          children: [
            for (final p in people)
              Padding(
                padding: const EdgeInsets.symmetric(horizontal: 4),
                child: ActionChip(
                  avatar: CircleAvatar(
                    backgroundColor: p.online && !p.stale ? colorFromHex(p.avatarColor) : Colors.grey,
                    child: p.status == null
                        ? Text(initialsOf(p.displayName), style: const TextStyle(color: Colors.white, fontSize: 10))
                        : Icon(statusIcon(p.status!.status), color: Colors.white, size: 14),
                  ),
                  backgroundColor: p.needsHelp ? Theme.of(context).colorScheme.errorContainer : null,
                  label: Text(label(p)),
                  onPressed: switch (p.location) {
                    final Location l => () => _focus(LatLng(l.lat, l.lng)),
                    null => null,
                  },
                ),
              ),
          ],
        ),
      ),
    );
  }

  /// Why the map stopped updating, and the way out.
  Widget _stoppedPanel(StopReason reason, SessionView view, ActiveSession active) {
    final text = switch (reason) {
      StopReason.ended => endedMessage(view.endedReason),
      StopReason.removed => 'You are no longer in this session: removed, or you left on another device.',
      StopReason.replaced => 'This session was opened on another device or in another tab.',
      StopReason.unauthorized => 'Your pass for this session is no longer valid. Join again to continue.',
      StopReason.left => 'You left this session.',
    };
    return ColoredBox(
      color: Colors.black45,
      child: AlertDialog(
        icon: const Icon(Icons.event_busy),
        content: Text(text, textAlign: TextAlign.center),
        actions: [
          if (reason == StopReason.unauthorized)
            TextButton(
              onPressed: () => _close(rejoin: active.joined.sessionId, joinLink: active.joinLink),
              child: const Text('Join again'),
            ),
          FilledButton(onPressed: _close, child: const Text('Back to start')),
        ],
      ),
    );
  }
}
