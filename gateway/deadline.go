package gateway

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// sharedDeadline hands out publish contexts shared by every send that starts within
// the same short slot, so the hot path does not pay for a context and a timer per
// request (context.WithTimeout costs about a microsecond here). A send waits between
// timeout and timeout+slot before it gives up. Time is measured on the monotonic clock,
// so a wall-clock jump cannot keep an expired context in use.
type sharedDeadline struct {
	timeout time.Duration
	slot    time.Duration
	base    time.Time
	cur     atomic.Pointer[deadlineSlot]
	mu      sync.Mutex
}

type deadlineSlot struct {
	ctx    context.Context
	cancel context.CancelFunc
	until  time.Duration // since base: requests starting before this share ctx
}

func newSharedDeadline(timeout time.Duration) *sharedDeadline {
	return &sharedDeadline{timeout: timeout, slot: min(timeout/10, 50*time.Millisecond), base: time.Now()}
}

// get returns a context that ends between timeout and timeout+slot after now. now
// must come from time.Now (it needs the monotonic reading).
func (d *sharedDeadline) get(now time.Time) context.Context {
	at := now.Sub(d.base)
	if s := d.cur.Load(); s != nil && at < s.until {
		return s.ctx
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if s := d.cur.Load(); s != nil && at < s.until {
		return s.ctx
	}
	ctx, cancel := context.WithDeadline(context.Background(), now.Add(d.timeout+d.slot))
	// Sends still waiting on a replaced slot keep its context: its timer ends it.
	d.cur.Store(&deadlineSlot{ctx: ctx, cancel: cancel, until: at + d.slot})
	return ctx
}

// stop releases the current slot's timer.
func (d *sharedDeadline) stop() {
	if s := d.cur.Load(); s != nil {
		s.cancel()
	}
}
