// Package retry holds the waiting between attempts that every retry loop in aerogate
// shares: full-jitter exponential backoff and a sleep that ends with its context.
package retry

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff returns the delay before attempt number attempt+1 after attempt failed
// (attempt ≥ 1): "full jitter", a uniform random duration in [0, min(max, base·2^(attempt-1))].
// Full jitter spreads the retries of many messages that failed together (a throughput
// error hits a whole burst) instead of sending them back in one wave.
func Backoff(attempt int, base, max time.Duration, rnd func(n int64) int64) time.Duration {
	if base <= 0 {
		return 0
	}
	if max < base {
		max = base
	}
	ceiling := base
	for i := 1; i < attempt && ceiling < max; i++ {
		ceiling *= 2
	}
	if ceiling > max || ceiling <= 0 {
		ceiling = max
	}
	if rnd == nil {
		rnd = rand.Int64N
	}
	return time.Duration(rnd(int64(ceiling) + 1))
}

// Sleep waits d, or less when ctx ends first; it reports whether the full wait passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
