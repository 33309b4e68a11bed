// The REST API (GET /openapi.json on the server): sessions, joining, leaving,
// places and the route.
import 'dart:convert';

import 'package:http/http.dart' as http;

import 'protocol.dart' show Json, Place, PlaceAdd, SessionRoute;

/// An error answer `{"error": {"code", "message", "field"?}}`, or a network failure
/// ([status] 0, [code] `network`).
class ApiException implements Exception {
  const ApiException(this.status, this.code, this.message, {this.field});

  final int status;
  final String code;
  final String message;
  final String? field;

  bool get isNetwork => status == 0;
  bool get isNotFound => status == 404;
  bool get isEnded => status == 410;

  @override
  String toString() => 'ApiException($status, $code)';
}

/// 201 of `POST /api/sessions`.
class CreatedSession {
  CreatedSession.fromJson(Json json)
      : sessionId = json['session_id']! as String,
        name = json['name']! as String,
        joinLink = json['join_link']! as String,
        expiresAt = DateTime.parse(json['expires_at']! as String),
        maxParticipants = (json['max_participants']! as num).toInt(),
        creatorToken = json['creator_token']! as String;

  final String sessionId;
  final String name;
  final String joinLink;
  final DateTime expiresAt;
  final int maxParticipants;

  /// For [RestClient.endSession]; the app does not store it.
  final String creatorToken;
}

/// 200 of `GET /api/sessions/{id}` (also for ended sessions).
class SessionDetails {
  SessionDetails.fromJson(Json json)
      : id = json['id']! as String,
        name = json['name']! as String,
        expiresAt = DateTime.parse(json['expires_at']! as String),
        participantCount = (json['participant_count']! as num).toInt(),
        maxParticipants = (json['max_participants']! as num).toInt(),
        isActive = json['is_active']! as bool,
        endedReason = json['ended_reason'] as String?;

  final String id;
  final String name;
  final DateTime expiresAt;
  final int participantCount;
  final int maxParticipants;
  final bool isActive;
  final String? endedReason; // null, `ended`, `expired` or `inactive`
}

/// 201 of `POST /api/sessions/{id}/join`: this device's pass into the session.
class JoinedSession {
  JoinedSession.fromJson(Json json)
      : userId = json['user_id']! as String,
        sessionId = json['session_id']! as String,
        displayName = json['display_name']! as String,
        avatarColor = json['avatar_color']! as String,
        websocketToken = json['websocket_token']! as String,
        websocketUrl = json['websocket_url']! as String;

  final String userId;
  final String sessionId;
  final String displayName;
  final String avatarColor;
  final String websocketToken;
  final String websocketUrl;

  /// `websocket_url + "?token=" + websocket_token`, plus `session=<session id>`:
  /// the server ignores it, a load balancer can route on it (deploy/compose/nginx.conf,
  /// the #sticky variant keeps a session's sockets on one node). A server started without
  /// LOCSHARE_PUBLIC_URL hands out `ws://localhost:...`, which on a phone or
  /// emulator is the device itself: such a loopback host is replaced by the host
  /// the REST API was reached at.
  Uri socketUri(Uri apiBase) {
    var uri = Uri.parse(websocketUrl);
    const loopback = {'localhost', '127.0.0.1', '::1'};
    if (loopback.contains(uri.host) && !loopback.contains(apiBase.host)) {
      uri = uri.replace(host: apiBase.host);
    }
    return uri.replace(queryParameters: {
      ...uri.queryParameters,
      'token': websocketToken,
      'session': sessionId,
    });
  }
}

class RestClient {
  RestClient(this.baseUrl, {http.Client? client, this.timeout = const Duration(seconds: 15)})
      : _http = client ?? http.Client();

  final Uri baseUrl;
  final Duration timeout;
  final http.Client _http;

  Future<CreatedSession> createSession({String? name, int? expiresInMinutes}) =>
      _send('POST', ['api', 'sessions'], CreatedSession.fromJson, body: {
        if (name != null && name.trim().isNotEmpty) 'name': name.trim(),
        if (expiresInMinutes != null) 'expires_in_minutes': expiresInMinutes,
      });

  Future<SessionDetails> getSession(String sessionId) =>
      _send('GET', ['api', 'sessions', sessionId], SessionDetails.fromJson);

  Future<JoinedSession> join(String sessionId, {required String displayName, String? avatarColor}) =>
      _send('POST', ['api', 'sessions', sessionId, 'join'], JoinedSession.fromJson, body: {
        'display_name': displayName,
        if (avatarColor != null) 'avatar_color': avatarColor,
      });

  /// Leaves for good: the REST twin of the `leave` message.
  Future<void> leave(JoinedSession joined) => _send(
        'DELETE',
        ['api', 'sessions', joined.sessionId, 'participants', joined.userId],
        _noBody,
        token: joined.websocketToken,
      );

  /// Ends the session for everyone (creator token only).
  Future<void> endSession(String sessionId, String creatorToken) =>
      _send('DELETE', ['api', 'sessions', sessionId], _noBody, token: creatorToken);

  // --- places: a participant's token (websocket_token) or the creator token ---------
  /// Adds a place (the REST twin of `place_add`): 201 with the place.
  Future<Place> addPlace(String sessionId, String token, PlaceAdd place) =>
      _send('POST', ['api', 'sessions', sessionId, 'places'], Place.fromJson, body: place.data, token: token);

  Future<List<Place>> listPlaces(String sessionId, String token) => _send(
        'GET',
        ['api', 'sessions', sessionId, 'places'],
        (json) => [for (final place in json['places']! as List<Object?>) Place.fromJson(place! as Json)],
        token: token,
      );

  /// Only the place's author or the creator may: 403 for others, 404 if unknown.
  Future<void> removePlace(String sessionId, String placeId, String token) =>
      _send('DELETE', ['api', 'sessions', sessionId, 'places', placeId], _noBody, token: token);

  // --- the route: the creator token only --------------------------------------------
  /// The largest GPX file the server takes.
  static const maxGpxBytes = 5 * 1024 * 1024;

  /// Sets the route from a GeoJSON `LineString`, or a `Feature` holding one.
  /// [offRouteM]: 10 to 10,000 (the server's default is 200).
  Future<SessionRoute> setRouteGeoJson(String sessionId, String creatorToken, Json geoJson, {int? offRouteM}) =>
      _send(
        'PUT',
        ['api', 'sessions', sessionId, 'route'],
        SessionRoute.fromJson,
        raw: (contentType: 'application/geo+json', bytes: utf8.encode(jsonEncode(geoJson))),
        query: {if (offRouteM != null) 'off_route_m': '$offRouteM'},
        token: creatorToken,
      );

  /// Sets the route from a GPX file (its track points, or else its route points).
  Future<SessionRoute> setRouteGpx(String sessionId, String creatorToken, List<int> gpx, {int? offRouteM}) async {
    if (gpx.length > maxGpxBytes) {
      // The server would refuse it too (413); no need to upload 5 MB to learn that.
      throw const ApiException(413, 'payload_too_large', 'The GPX file is larger than 5 MB.');
    }
    return _send(
      'PUT',
      ['api', 'sessions', sessionId, 'route'],
      SessionRoute.fromJson,
      raw: (contentType: 'application/gpx+xml', bytes: gpx),
      query: {if (offRouteM != null) 'off_route_m': '$offRouteM'},
      token: creatorToken,
    );
  }

  Future<void> clearRoute(String sessionId, String creatorToken) =>
      _send('DELETE', ['api', 'sessions', sessionId, 'route'], _noBody, token: creatorToken);

  void close() => _http.close();

  static void _noBody(Json _) {}

  /// [body] is sent as JSON; [raw] as it is, with its own content type.
  Future<T> _send<T>(String method, List<String> path, T Function(Json json) parse,
      {Json? body, ({String contentType, List<int> bytes})? raw, Map<String, String>? query, String? token}) async {
    // pathSegments encodes each segment, and keeps a base path (reverse proxy).
    var url = baseUrl.replace(pathSegments: [...baseUrl.pathSegments.where((s) => s.isNotEmpty), ...path]);
    if (query != null && query.isNotEmpty) url = url.replace(queryParameters: query);
    final request = http.Request(method, url)..headers['Accept'] = 'application/json';
    if (token != null) request.headers['Authorization'] = 'Bearer $token';
    if (body != null) {
      request.headers['Content-Type'] = 'application/json';
      request.body = jsonEncode(body);
    } else if (raw != null) {
      request.headers['Content-Type'] = raw.contentType;
      request.bodyBytes = raw.bytes;
    }
    final http.Response response;
    try {
      response = await _http.send(request).then(http.Response.fromStream).timeout(timeout);
    } on Exception {
      // Timeouts, and socket or TLS failures (http wraps them in ClientException).
      throw const ApiException(0, 'network', 'Cannot reach the server.');
    }
    Object? decoded;
    try {
      decoded = response.body.isEmpty ? const <String, Object?>{} : jsonDecode(response.body);
    } on FormatException {
      decoded = null;
    }
    if (response.statusCode < 200 || response.statusCode >= 300) {
      final error = decoded is Map<String, Object?> ? decoded['error'] : null;
      final fields = error is Map<String, Object?> ? error : const <String, Object?>{};
      throw ApiException(
        response.statusCode,
        fields['code'] is String ? fields['code']! as String : 'unknown',
        fields['message'] is String ? fields['message']! as String : 'The server refused the request.',
        field: fields['field'] is String ? fields['field']! as String : null,
      );
    }
    try {
      return parse(decoded! as Json);
    } on Object {
      throw ApiException(response.statusCode, 'bad_response', 'Unexpected answer from the server.');
    }
  }
}
