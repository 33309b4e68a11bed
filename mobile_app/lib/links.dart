// Join links: `https://<host>/join/<id>` (what the server hands out) and
// `locshare://join/<id>` (the app scheme).

final _sessionId = RegExp(r'^[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}$');

/// The session id in a join link, or null if [uri] is not one.
String? sessionIdFromLink(Uri uri) {
  final segments = uri.pathSegments.where((s) => s.isNotEmpty).toList();
  String? id;
  if (uri.scheme == 'locshare' && uri.host == 'join' && segments.length == 1) {
    id = segments.single;
  } else if ((uri.scheme == 'https' || uri.scheme == 'http') &&
      segments.length == 2 &&
      segments.first == 'join') {
    id = segments.last;
  }
  return id != null && _sessionId.hasMatch(id) ? id.toLowerCase() : null;
}

/// A pasted link, or a bare session id.
String? sessionIdFromText(String text) {
  final trimmed = text.trim();
  if (_sessionId.hasMatch(trimmed)) return trimmed.toLowerCase();
  final uri = Uri.tryParse(trimmed);
  return uri == null ? null : sessionIdFromLink(uri);
}
