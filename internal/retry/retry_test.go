package retry

import (
	"context"
	"testing"
	"time"
)

func TestBackoffFullJitterBounds(t *testing.T) {
	base, max := 100*time.Millisecond, 2*time.Second
	tests := []struct {
		attempt int
		ceiling time.Duration
	}{
		{1, 100 * time.Millisecond},
		{2, 200 * time.Millisecond},
		{3, 400 * time.Millisecond},
		{5, 1600 * time.Millisecond},
		{6, 2 * time.Second},
		{60, 2 * time.Second}, // no overflow
	}
	for _, tt := range tests {
		// The top of the range is reachable and nothing is above it.
		top := Backoff(tt.attempt, base, max, func(n int64) int64 { return n - 1 })
		if top != tt.ceiling {
			t.Errorf("attempt %d: ceiling %v, want %v", tt.attempt, top, tt.ceiling)
		}
		if low := Backoff(tt.attempt, base, max, func(int64) int64 { return 0 }); low != 0 {
			t.Errorf("attempt %d: floor %v, want 0", tt.attempt, low)
		}
		for range 200 {
			d := Backoff(tt.attempt, base, max, nil)
			if d < 0 || d > tt.ceiling {
				t.Fatalf("attempt %d: %v outside [0, %v]", tt.attempt, d, tt.ceiling)
			}
		}
	}
	if d := Backoff(3, 0, time.Second, nil); d != 0 {
		t.Errorf("zero base: %v", d)
	}
}

func TestSleepEndsWithContext(t *testing.T) {
	if !Sleep(context.Background(), time.Millisecond) {
		t.Fatal("Sleep with a live context reported an early end")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep with an ended context reported the full wait")
	}
	if Sleep(ctx, 0) {
		t.Fatal("Sleep(0) with an ended context reported the full wait")
	}
}
