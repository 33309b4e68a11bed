import 'package:flutter/material.dart';
import 'package:qr_flutter/qr_flutter.dart';
import 'package:share_plus/share_plus.dart';

import '../../api/rest_client.dart';
import '../format.dart';
import 'join_screen.dart';

/// The join link as text, a QR code for people in the same room, and the
/// system share sheet. Right after "Start a session" it also offers to join.
class ShareScreen extends StatelessWidget {
  const ShareScreen({super.key, required this.title, required this.joinLink, this.created});

  final String title;
  final String joinLink;
  final CreatedSession? created;

  static Route<void> route(CreatedSession created) => MaterialPageRoute(
        builder: (_) => ShareScreen(title: created.name, joinLink: created.joinLink, created: created),
      );

  static Route<void> inviteRoute({required String title, required String joinLink}) =>
      MaterialPageRoute(builder: (_) => ShareScreen(title: title, joinLink: joinLink));

  Future<void> _share(BuildContext context) {
    // iPads anchor the share popover to a rectangle on screen.
    final box = context.findRenderObject() as RenderBox?;
    return SharePlus.instance.share(ShareParams(
      text: 'Join "$title" on locshare to see each other on a live map: $joinLink',
      subject: 'Join "$title" on locshare',
      sharePositionOrigin: box == null ? null : box.localToGlobal(Offset.zero) & box.size,
    ));
  }

  @override
  Widget build(BuildContext context) {
    final session = created;
    return Scaffold(
      appBar: AppBar(title: const Text('Invite people')),
      body: ListView(
        padding: const EdgeInsets.all(24),
        children: [
          Text(title, style: Theme.of(context).textTheme.headlineSmall, textAlign: TextAlign.center),
          if (session != null)
            Text('Ends at ${timeOfDay(context, session.expiresAt)}', textAlign: TextAlign.center),
          const SizedBox(height: 16),
          Center(
            child: QrImageView(
              data: joinLink,
              size: 220,
              backgroundColor: Colors.white,
              semanticsLabel: 'QR code of the join link',
            ),
          ),
          const SizedBox(height: 16),
          SelectableText(joinLink, textAlign: TextAlign.center),
          const SizedBox(height: 16),
          Builder(
            builder: (button) => FilledButton.icon(
              onPressed: () => _share(button),
              icon: const Icon(Icons.share),
              label: const Text('Share link'),
            ),
          ),
          if (session != null) ...[
            const SizedBox(height: 8),
            OutlinedButton(
              onPressed: () => Navigator.of(context)
                  .pushReplacement(JoinScreen.route(session.sessionId, joinLink: session.joinLink)),
              child: const Text('Join this session'),
            ),
          ],
        ],
      ),
    );
  }
}
