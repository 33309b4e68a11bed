import 'package:flutter/material.dart';
import 'package:flutter/services.dart';

import '../../api/protocol.dart';
import '../format.dart';

String statusLabel(String status) => switch (status) {
      StatusKind.onMyWay => 'On my way',
      StatusKind.arrived => 'Arrived',
      StatusKind.onBreak => 'Taking a break',
      StatusKind.needHelp => 'Need help',
      _ => status.replaceAll('_', ' '),
    };

IconData statusIcon(String status) => switch (status) {
      StatusKind.onMyWay => Icons.directions_walk,
      StatusKind.arrived => Icons.flag,
      StatusKind.onBreak => Icons.coffee,
      StatusKind.needHelp => Icons.sos,
      _ => Icons.info_outline,
    };

/// A participant's status as a short line: "Need help: flat tyre".
String statusLine(ParticipantStatus status) {
  final text = status.text;
  return text == null ? statusLabel(status.status) : '${statusLabel(status.status)}: $text';
}

/// The server's rule for a note: 1 to 80 characters after trimming (empty: no
/// note), no control or bidirectional formatting characters.
String? validateStatusNote(String? value) {
  final note = value?.trim() ?? '';
  if (note.runes.length > StatusKind.maxTextChars) return 'Use at most ${StatusKind.maxTextChars} characters.';
  if (hasControlCharacters(note)) return 'Remove line breaks and other control characters.';
  if (hasBidiControls(note)) return 'Remove direction-changing characters.';
  return null;
}

/// What the user chose in the [StatusSheet]: [status] null clears it.
class StatusChoice {
  const StatusChoice(this.status, this.text);

  final String? status;
  final String? text;
}

/// The status menu: on my way, arrived, break, need help, or clear; with an
/// optional note of at most 80 characters.
class StatusSheet extends StatefulWidget {
  const StatusSheet({super.key, this.current, required this.onSubmit});

  /// This device's status now (preselected), or null.
  final ParticipantStatus? current;
  final void Function(StatusChoice choice) onSubmit;

  @override
  State<StatusSheet> createState() => _StatusSheetState();
}

class _StatusSheetState extends State<StatusSheet> {
  final _form = GlobalKey<FormState>();
  late final _note = TextEditingController(text: widget.current?.text ?? '');
  late String? _status = widget.current?.status;

  @override
  void dispose() {
    _note.dispose();
    super.dispose();
  }

  void _submit() {
    final status = _status;
    if (status == null || !_form.currentState!.validate()) return;
    final note = _note.text.trim();
    widget.onSubmit(StatusChoice(status, note.isEmpty ? null : note));
  }

  @override
  Widget build(BuildContext context) {
    final scheme = Theme.of(context).colorScheme;
    return Padding(
      padding: EdgeInsets.fromLTRB(16, 16, 16, 16 + MediaQuery.viewInsetsOf(context).bottom),
      child: Form(
        key: _form,
        child: Column(
          mainAxisSize: MainAxisSize.min,
          crossAxisAlignment: CrossAxisAlignment.stretch,
          children: [
            Text('Your status', style: Theme.of(context).textTheme.titleLarge),
            const SizedBox(height: 8),
            Wrap(spacing: 8, runSpacing: 8, children: [
              for (final status in StatusKind.all)
                ChoiceChip(
                  key: Key('status-$status'),
                  avatar: Icon(statusIcon(status),
                      color: status == StatusKind.needHelp ? scheme.error : null, size: 18),
                  label: Text(statusLabel(status)),
                  selected: _status == status,
                  onSelected: (_) => setState(() => _status = status),
                ),
            ]),
            const SizedBox(height: 8),
            TextFormField(
              key: const Key('statusNote'),
              controller: _note,
              // Show the counter, but let the validator explain the limit.
              maxLength: StatusKind.maxTextChars,
              maxLengthEnforcement: MaxLengthEnforcement.none,
              decoration: const InputDecoration(labelText: 'Note (optional)', hintText: 'e.g. flat tyre at the bridge'),
              validator: validateStatusNote,
              onFieldSubmitted: (_) => _submit(),
            ),
            const SizedBox(height: 8),
            Row(children: [
              if (widget.current != null)
                TextButton(
                  key: const Key('clearStatus'),
                  onPressed: () => widget.onSubmit(const StatusChoice(null, null)),
                  child: const Text('Clear my status'),
                ),
              const Spacer(),
              FilledButton(
                key: const Key('setStatus'),
                onPressed: _status == null ? null : _submit,
                style: _status == StatusKind.needHelp
                    ? FilledButton.styleFrom(backgroundColor: scheme.error, foregroundColor: scheme.onError)
                    : null,
                child: Text(_status == StatusKind.needHelp ? 'Ask for help' : 'Set status'),
              ),
            ]),
          ],
        ),
      ),
    );
  }
}

/// Opens the [StatusSheet]; null if dismissed.
Future<StatusChoice?> showStatusSheet(BuildContext context, {ParticipantStatus? current}) =>
    showModalBottomSheet<StatusChoice>(
      context: context,
      isScrollControlled: true, // room for the keyboard
      showDragHandle: true,
      builder: (context) => StatusSheet(current: current, onSubmit: (choice) => Navigator.pop(context, choice)),
    );
