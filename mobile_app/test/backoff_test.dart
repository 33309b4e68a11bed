import 'dart:math' as math;

import 'package:flutter_test/flutter_test.dart';
import 'package:locshare_app/api/ws_client.dart';

/// A Random whose nextDouble() is fixed, so the jitter is known.
class FixedRandom implements math.Random {
  FixedRandom(this.value);

  final double value;

  @override
  double nextDouble() => value;

  @override
  int nextInt(int max) => (value * max).floor();

  @override
  bool nextBool() => value >= 0.5;
}

void main() {
  test('doubles from 0.5 s and stops at 30 s', () {
    final backoff = Backoff(random: FixedRandom(0.5)); // factor exactly 1
    final waits = [for (var i = 0; i < 10; i++) backoff.next().inMilliseconds];
    expect(waits, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]);
  });

  test('jitter stays within +-50 %', () {
    expect(Backoff(random: FixedRandom(0)).next(), const Duration(milliseconds: 250));
    expect(Backoff(random: FixedRandom(0.999999)).next().inMilliseconds, closeTo(750, 1));
    final random = math.Random(7);
    final backoff = Backoff(random: random);
    for (var i = 0; i < 40; i++) {
      final base = math.min(500 * math.pow(2, math.min(i, 10)), 30000);
      final wait = backoff.next().inMicroseconds / 1000;
      expect(wait, inInclusiveRange(base * 0.5, base * 1.5));
    }
  });

  test('reset starts again from 0.5 s', () {
    final backoff = Backoff(random: FixedRandom(0.5));
    for (var i = 0; i < 5; i++) {
      backoff.next();
    }
    backoff.reset();
    expect(backoff.next(), const Duration(milliseconds: 500));
  });

  test('reconnects on every close except 1000, 4000, 4001, 4401 and 4403', () {
    for (final code in [null, 1001, 1006, 1009, 1011, 1013, 4408]) {
      expect(shouldReconnect(code), isTrue, reason: '$code');
    }
    for (final code in [1000, 4000, 4001, 4401, 4403]) {
      expect(shouldReconnect(code), isFalse, reason: '$code');
    }
  });
}
