import 'dart:convert';

import 'package:flutter_test/flutter_test.dart';
import 'package:http/http.dart' as http;
import 'package:http/testing.dart';
import 'package:locshare_app/api/protocol.dart';
import 'package:locshare_app/api/rest_client.dart';

import 'fixtures.dart';

const sessionId = '5e55e55e-0000-4000-8000-00000000000f';

void main() {
  late List<http.Request> requests;

  /// A client whose server answers every request with [status] and [body].
  RestClient answering(int status, [Object? body]) {
    requests = [];
    final client = MockClient((request) async {
      requests.add(request);
      return http.Response(
        body == null ? '' : jsonEncode(body),
        status,
        headers: {'content-type': 'application/json'},
      );
    });
    return RestClient(Uri.parse('http://locshare.test/base'), client: client);
  }

  test('add a place: POST, JSON body, bearer token, 201 with the place', () async {
    final rest = answering(201, circlePlace());
    final place = await rest.addPlace(
      sessionId,
      'participant-token',
      const PlaceAdd.circle(name: 'Camp', kind: PlaceKind.meet, center: GeoPoint(52.52, 13.405), radiusM: 50),
    );
    expect(place.placeId, campId);
    final request = requests.single;
    expect([request.method, request.url.path], ['POST', '/base/api/sessions/$sessionId/places']);
    expect(request.headers['Authorization'], 'Bearer participant-token');
    expect(request.headers['Content-Type'], startsWith('application/json'));
    expect(jsonDecode(request.body), {'name': 'Camp', 'kind': 'meet', 'lat': 52.52, 'lng': 13.405, 'radius_m': 50.0});
  });

  test('a refused place names the field', () async {
    final rest = answering(422, {
      'error': {'code': 'invalid_request', 'message': 'Self-intersection[13.1 52.1]', 'field': 'geometry'},
    });
    final refused = rest.addPlace(
      sessionId,
      'participant-token',
      const PlaceAdd.polygon(name: 'Bow tie', kind: PlaceKind.poi, ring: [
        GeoPoint(52.0, 13.0),
        GeoPoint(52.2, 13.2),
        GeoPoint(52.0, 13.2),
        GeoPoint(52.2, 13.0),
      ]),
    );
    await expectLater(
      refused,
      throwsA(isA<ApiException>()
          .having((e) => e.status, 'status', 422)
          .having((e) => e.field, 'field', 'geometry')
          .having((e) => e.message, 'message', contains('Self-intersection'))),
    );
    final sent = jsonDecode(requests.single.body) as Map<String, Object?>;
    expect((sent['geometry']! as Map<String, Object?>)['type'], 'Polygon');
  });

  test('list places', () async {
    final rest = answering(200, {
      'places': [circlePlace(), polygonPlace()],
    });
    final places = await rest.listPlaces(sessionId, 'creator-token');
    expect(places.map((p) => p.name), ['Camp', 'Lake']);
    expect(requests.single.method, 'GET');
  });

  test('remove a place: DELETE, 204', () async {
    final rest = answering(204);
    await rest.removePlace(sessionId, campId, 'participant-token');
    final request = requests.single;
    expect([request.method, request.url.path], ['DELETE', '/base/api/sessions/$sessionId/places/$campId']);
  });

  test("removing someone else's place: 403", () async {
    final rest = answering(403, {
      'error': {'code': 'forbidden', 'message': 'Only its author or the creator may remove a place.'},
    });
    await expectLater(
      rest.removePlace(sessionId, campId, 'participant-token'),
      throwsA(isA<ApiException>().having((e) => e.code, 'code', 'forbidden')),
    );
  });

  test('set the route from GeoJSON: PUT application/geo+json, off_route_m in the query', () async {
    final rest = answering(200, routeJson);
    final line = {
      'type': 'LineString',
      'coordinates': [
        [179.8, -16.5],
        [-179.9, -16.6],
      ],
    };
    final route = await rest.setRouteGeoJson(sessionId, 'creator-token', line, offRouteM: 150);
    expect(route.lengthM, 61234.5);
    final request = requests.single;
    expect([request.method, request.url.path], ['PUT', '/base/api/sessions/$sessionId/route']);
    expect(request.url.queryParameters, {'off_route_m': '150'});
    expect(request.headers['Content-Type'], 'application/geo+json');
    expect(request.headers['Authorization'], 'Bearer creator-token');
    expect(jsonDecode(utf8.decode(request.bodyBytes)), line);
  });

  test('set the route from GPX: PUT application/gpx+xml, the bytes as they are', () async {
    final rest = answering(200, routeJson);
    final gpx = utf8.encode('<?xml version="1.0"?><gpx version="1.1" creator="test"><trk><trkseg>'
        '<trkpt lat="-16.5" lon="179.8"/><trkpt lat="-16.6" lon="-179.9"/></trkseg></trk></gpx>');
    await rest.setRouteGpx(sessionId, 'creator-token', gpx);
    final request = requests.single;
    expect(request.headers['Content-Type'], 'application/gpx+xml');
    expect(request.url.queryParameters, isEmpty, reason: "the server's default off_route_m");
    expect(request.bodyBytes, gpx);
  });

  test('a GPX file over 5 MB is not uploaded', () async {
    final rest = answering(200, routeJson);
    await expectLater(
      rest.setRouteGpx(sessionId, 'creator-token', List<int>.filled(RestClient.maxGpxBytes + 1, 0x20)),
      throwsA(isA<ApiException>().having((e) => e.status, 'status', 413)),
    );
    expect(requests, isEmpty);
  });

  test('clear the route: DELETE, 204', () async {
    final rest = answering(204);
    await rest.clearRoute(sessionId, 'creator-token');
    expect([requests.single.method, requests.single.url.path], ['DELETE', '/base/api/sessions/$sessionId/route']);
  });

  test('an unreadable place is a bad response, not a crash', () async {
    final rest = answering(201, {'place_id': campId});
    await expectLater(
      rest.addPlace(
        sessionId,
        'token',
        const PlaceAdd.circle(name: 'Camp', kind: PlaceKind.meet, center: GeoPoint(52.52, 13.405)),
      ),
      throwsA(isA<ApiException>().having((e) => e.code, 'code', 'bad_response')),
    );
  });

  test('the socket URI carries the token and the session id (for sticky routing)', () {
    final joined = JoinedSession.fromJson({
      'user_id': 'u-1',
      'session_id': sessionId,
      'display_name': 'Ann',
      'avatar_color': '#4363D8',
      'websocket_token': 'tok.en',
      'websocket_url': 'ws://localhost:8081/ws',
    });
    final uri = joined.socketUri(Uri.parse('http://192.168.1.20:8080'));
    expect(uri.host, '192.168.1.20');
    expect(uri.path, '/ws');
    expect(uri.queryParameters, {'token': 'tok.en', 'session': sessionId});
  });
}
