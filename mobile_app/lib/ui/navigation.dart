import 'package:flutter/widgets.dart';

/// Tells pages when another page covers them or goes away (RouteAware): the map
/// screen uses it for `visibility`. Page routes only: a dialog or a bottom sheet
/// over the map leaves the map on screen.
final pageRouteObserver = RouteObserver<PageRoute<dynamic>>();
