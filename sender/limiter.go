package sender

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/aerostic/aerogate/internal/whatsapp"
)

// MaxThroughputMPS is the highest per-number throughput Meta grants.
const MaxThroughputMPS = int(whatsapp.MaxThroughput)

// numberLimiters holds one token bucket per phone number id, at that account's
// throughput_mps.
//
// The buckets live in this process's memory and that is globally right: wa.sends and
// wa.sends.retry are keyed by tenant, so all of a tenant's sends sit in one partition of
// each topic, the consumer group gives each partition to exactly one sender instance at a
// time (and the range assignor gives partition p of both topics to the same instance), so
// every send of a phone number passes through a single bucket. After a rebalance the new
// owner starts a fresh bucket, empty, so the hand-over admits nothing early.
type numberLimiters struct {
	mu         sync.Mutex
	byNumber   map[string]*rate.Limiter
	defaultMPS int
	burst      func(mps int) int
}

func newNumberLimiters(defaultMPS int) *numberLimiters {
	return &numberLimiters{byNumber: make(map[string]*rate.Limiter), defaultMPS: defaultMPS, burst: burstFor}
}

// newAdmissionLimiters are the buckets that admit a number's sends (a direct send's
// turn, a drain's releases), in front of the Graph calls' own buckets
// (newNumberLimiters): a tenth of a second deep, so that a drain held up for a moment
// (a page read, a slow machine) catches up instead of losing the number's pace; the
// calls' shallower buckets still keep every second within the rate.
func newAdmissionLimiters(defaultMPS int) *numberLimiters {
	return &numberLimiters{byNumber: make(map[string]*rate.Limiter), defaultMPS: defaultMPS,
		burst: func(mps int) int { return max(mps/10, 1) }}
}

// burstFor is the depth of a Graph calls' bucket for mps: small (1/50 s of sends, at
// least one) so that over any window of a second or more the calls stay within 2 % of
// mps, which leaves room for the jitter between a call and Meta's reading it.
func burstFor(mps int) int {
	return max(mps/50, 1)
}

// get returns the bucket of phoneNumberID, created at or adjusted to mps (≤ 0: the
// default; capped at MaxThroughputMPS).
func (l *numberLimiters) get(phoneNumberID string, mps int) *rate.Limiter {
	if mps <= 0 {
		mps = l.defaultMPS
	}
	if mps > MaxThroughputMPS {
		mps = MaxThroughputMPS
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.byNumber[phoneNumberID]
	if !ok {
		lim = rate.NewLimiter(rate.Limit(mps), l.burst(mps))
		// A new bucket starts empty: after a rebalance the previous owner's last second
		// and this one's first add up to the rate, not the rate and a burst.
		lim.AllowN(time.Now(), l.burst(mps))
		l.byNumber[phoneNumberID] = lim
		return lim
	}
	if lim.Limit() != rate.Limit(mps) {
		lim.SetLimit(rate.Limit(mps))
		lim.SetBurst(l.burst(mps))
	}
	return lim
}

// wait blocks until phoneNumberID's bucket (at mps) lets one send go, or ctx ends. A
// send that has to wait is counted in aerogate_rate_limit_waits_total{reason="number"}
// with how long it waited.
func (l *numberLimiters) wait(ctx context.Context, phoneNumberID string, mps int) error {
	r := l.get(phoneNumberID, mps).Reserve()
	if !r.OK() {
		return fmt.Errorf("rate limit of number %s: burst exceeded", phoneNumberID)
	}
	d := r.Delay()
	if d <= 0 {
		return nil
	}
	waitsNumber.Inc()
	waitSecondsNumber.Observe(d.Seconds())
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		r.Cancel()
		return ctx.Err()
	}
}
