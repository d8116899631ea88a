package sender

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/message"
	"github.com/aerostic/aerogate/internal/metrics"
	"github.com/aerostic/aerogate/internal/queue"
	"github.com/aerostic/aerogate/internal/retry"
)

// Parking reasons (the reason label of aerogate_parked_total).
const (
	reasonPacing  = "pacing"  // the number's bucket was empty beyond ParkAfter
	reasonBehind  = "behind"  // the number already had sends parked
	reasonStopped = "stopped" // the account cannot send (token expired, invalid, needs reconnect)
	reasonPaused  = "paused"  // the number is paused
)

// partQueues holds the drains of the numbers parked from one wa.sends partition, for
// one generation of the consumer group: built when the generation assigns the
// partition, closed (every drain stopped and its released sends settled) when the
// partition's handler closes, so the next owner starts its drains only after these
// stopped.
type partQueues struct {
	s   *Sender
	id  int
	ctx context.Context
	// part is what released sends carry as their partition: its index (for the retry
	// topic) and the context above. It is not a queue.Partition of the consumer: a
	// released send settles by deleting its row, not by an offset.
	part   *partition
	cancel context.CancelFunc

	mu     sync.Mutex
	drains map[string]*drain // by phone number id
	closed bool
	wg     sync.WaitGroup
}

func (s *Sender) newPartQueues(id int) *partQueues {
	ctx, cancel := context.WithCancel(context.Background())
	q := &partQueues{s: s, id: id, ctx: ctx, cancel: cancel, drains: map[string]*drain{}}
	q.part = &partition{Partition: &queue.Partition{Topic: queue.TopicSends, ID: id}, ctx: ctx}
	return q
}

// load starts a drain for every number with rows parked in the partition, before the
// partition's first message is handled: its new sends must queue behind those rows. It
// retries until Postgres answers or the partition goes away (false).
func (q *partQueues) load(pctx context.Context) bool {
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(pctx, 30*time.Second)
		nums, err := q.s.opts.Messages.ParkedNumbers(ctx, q.id)
		cancel()
		if err == nil {
			for _, n := range nums {
				d := q.get(n.PhoneNumberID, n.TenantID)
				if d == nil {
					return false
				}
				d.mu.Lock()
				d.addRows(n.Rows)
				d.oldest = n.Oldest
				d.startLocked()
				d.mu.Unlock()
			}
			if len(nums) > 0 {
				q.s.log.Info("parked sends found", "partition", q.id, "numbers", len(nums))
			}
			return true
		}
		q.s.log.Warn("listing parked sends", "partition", q.id, "err", err)
		if !retry.Sleep(pctx, retry.Backoff(attempt, q.s.cfg.RetryBaseDelay, transientMaxDelay, nil)) {
			return false
		}
	}
}

// get returns the number's drain state, making it (not running) if needed; nil once
// the partition is closed.
func (q *partQueues) get(phone, tenant string) *drain {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil
	}
	d, ok := q.drains[phone]
	if !ok {
		d = &drain{q: q, phone: phone, tenant: tenant, holding: map[int64]struct{}{}, wake: make(chan struct{}, 1), readMax: -1, sentMax: -1}
		q.drains[phone] = d
	}
	return d
}

// lookup returns the number's drain state if it has one.
func (q *partQueues) lookup(phone string) *drain {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.drains[phone]
}

// close stops every drain and waits until they stopped and their released sends
// settled (each either finished or left in its row).
func (q *partQueues) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cancel()
	q.wg.Wait()
	q.mu.Lock()
	for _, d := range q.drains {
		d.mu.Lock()
		d.dropSeries()
		d.mu.Unlock()
	}
	clear(q.drains)
	q.mu.Unlock()
}

// drain is one number's parked sends from one partition on this instance. While it
// runs, the number's table rows are being released in order, and every new send of the
// number parks behind them (so a recipient's later messages never overtake its parked
// earlier ones). It stops when the table holds nothing of the number, nothing it
// released is unsettled and no park is being written.
type drain struct {
	q      *partQueues
	phone  string
	tenant string

	mu      sync.Mutex
	running bool
	parking int    // park writes in flight
	parks   uint64 // rows parked so far (the drain stops only if none came while it looked)
	rows    int64  // rows in the table, as far as this instance knows (metrics, estimates)
	urgent  int64  // of rows, urgent ones
	// holding: rows released and not yet settled, by seq; a page leaves them out.
	holding map[int64]struct{}
	// halted: a released send found the account stopped or the number paused. The sends
	// released after it stay in their rows too, and the drain releases nothing until
	// holding is empty and the account can send: a recipient's order holds.
	halted bool
	// readMax is the highest seq read since the drain last started over; a row parked
	// below it (a send back from the retry topic) may belong before sends already
	// released: epoch moves on, the released sends of older epochs that have not
	// started stay in their rows (stale), and the drain starts over once they settled.
	readMax int64
	// sentMax is the highest seq released since then: every ordinary row below it that
	// is not held was finished and deleted, so the next read starts there.
	sentMax int64
	epoch   uint64
	stale   bool
	// reread: an urgent row arrived; the rest of the page waits for the next read.
	reread bool
	oldest time.Time
	wake   chan struct{}

	gauge prometheus.Gauge // the number's series, or "other"
	own   bool
}

func (d *drain) signal() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// active reports whether the number's new sends must park behind what it holds.
func (d *drain) activeLocked() bool { return d.running || d.parking > 0 }

// startLocked starts the drain goroutine if it does not run.
func (d *drain) startLocked() {
	if d.running {
		return
	}
	d.q.mu.Lock()
	closed := d.q.closed
	if !closed {
		d.q.wg.Add(1)
	}
	d.q.mu.Unlock()
	if closed {
		return
	}
	d.running = true
	go d.run()
}

func (d *drain) addRows(n int64) {
	d.rows += n
	if d.gauge == nil {
		d.gauge, d.own = d.q.s.parkedSeries(d.phone)
	}
	d.gauge.Add(float64(n))
}

func (d *drain) dropSeries() {
	if d.gauge == nil {
		return
	}
	d.q.s.releaseSeries(d.phone, d.own, d.rows)
	d.gauge, d.own = nil, false
}

// estimate is when a send parked now would be sent: after the sends ahead of it at the
// number's rate (urgent: after the urgent rows only). Ahead are the rows parked, those
// being parked (fetched before it, or alongside: a slight overestimate) and those
// released.
func (d *drain) estimate(now time.Time, mps int, urgent bool) time.Time {
	if mps <= 0 {
		mps = d.q.s.cfg.DefaultThroughputMPS
	}
	d.mu.Lock()
	ahead := d.rows + int64(d.parking) + int64(len(d.holding))
	if urgent {
		ahead = d.urgent
	}
	d.mu.Unlock()
	return now.Add(time.Duration(float64(ahead+1) / float64(mps) * float64(time.Second)))
}

// drainWindow bounds the sends a drain has released but not settled (its memory, and
// the Graph calls of the number in flight); drainPage is how many rows one read takes,
// about a quarter second of sends, so an urgent row waits at most about that long for
// the next read.
func drainWindow(mps int) int { return min(max(2*mps, 16), 1000) }
func drainPage(mps int) int   { return min(max(mps/4, 8), 250) }

// run releases the number's rows in order at its rate until none is left or the
// partition goes away.
func (d *drain) run() {
	q := d.q
	s := q.s
	defer q.wg.Done()
	log := s.log.With("partition", q.id, "phone_number_id", d.phone)
	log.Debug("drain started")
	mps := 0
	for attempt := 0; ; {
		if q.ctx.Err() != nil {
			d.stop()
			return
		}
		// The account decides whether anything may go: a stopped account or a paused
		// number waits for its change notification (or the pause's end), checking again
		// every paused_retry_delay in case a notification was missed.
		acct, wait := d.accountState(log)
		if wait != nil {
			if !d.waitUntilSettled() {
				continue
			}
			d.waitFor(wait)
			continue
		}
		if acct != nil {
			mps = acct.ThroughputMPS
		}
		if mps <= 0 {
			mps = s.cfg.DefaultThroughputMPS
		}
		window, page := drainWindow(mps), drainPage(mps)

		d.mu.Lock()
		if d.halted || d.stale {
			d.mu.Unlock()
			if d.waitUntilSettled() {
				d.mu.Lock()
				d.halted, d.stale = false, false
				d.readMax, d.sentMax = -1, -1
				d.mu.Unlock()
			}
			continue
		}
		d.reread = false
		room := window - len(d.holding)
		if room < page && len(d.holding) > 0 {
			d.mu.Unlock()
			d.waitWake()
			continue
		}
		holding := make([]int64, 0, len(d.holding))
		// Every ordinary row below from was released and finished (deleted): one that
		// was not made the drain start over (halted, stale), which resets sentMax.
		from := d.sentMax + 1
		for seq := range d.holding {
			holding = append(holding, seq)
			from = min(from, seq)
		}
		seen := d.parks
		d.mu.Unlock()

		ctx, cancel := context.WithTimeout(q.ctx, 30*time.Second)
		rows, err := s.opts.Messages.ParkedPage(ctx, q.id, d.phone, holding, max(from, 0), min(page, room))
		cancel()
		if err != nil {
			if q.ctx.Err() != nil {
				continue
			}
			attempt++
			log.Warn("reading parked sends", "err", err)
			retry.Sleep(q.ctx, retry.Backoff(attempt, s.cfg.RetryBaseDelay, transientMaxDelay, nil))
			continue
		}
		attempt = 0
		if len(rows) == 0 {
			d.mu.Lock()
			if len(d.holding) == 0 && d.parking == 0 && d.parks == seen {
				d.running = false
				d.halted = false
				d.dropSeries() // removed when empty
				d.rows, d.urgent = 0, 0
				d.readMax, d.sentMax = -1, -1
				d.oldest = time.Time{}
				d.mu.Unlock()
				log.Debug("drain finished")
				return
			}
			d.mu.Unlock()
			d.waitWake()
			continue
		}
		d.mu.Lock()
		if d.stale {
			d.mu.Unlock()
			continue // a row parked below this page while it was read
		}
		d.oldest = rows[0].ParkedAt
		for _, r := range rows {
			if r.ParkedAt.Before(d.oldest) {
				d.oldest = r.ParkedAt
			}
			d.readMax = max(d.readMax, r.Seq)
		}
		epoch := d.epoch
		d.mu.Unlock()
		lim := s.limiters.get(d.phone, mps)
		for _, r := range rows {
			// The number's pace, shared with its direct sends (none while this drain runs).
			if err := lim.Wait(q.ctx); err != nil {
				break
			}
			d.mu.Lock()
			if d.halted || d.reread || d.epoch != epoch {
				d.mu.Unlock()
				break // (the token is lost: one send's worth of pace)
			}
			d.holding[r.Seq] = struct{}{}
			if !r.Urgent {
				d.sentMax = max(d.sentMax, r.Seq)
			}
			d.mu.Unlock()
			j := d.job(r)
			j.epoch = epoch
			s.lanes.enqueue(j.key, j)
		}
	}
}

// job makes the released row r a job of the lanes.
func (d *drain) job(r message.ParkedRow) *job {
	env, bad := decodeSend(r.Envelope)
	return &job{part: d.q.part, offset: r.Seq, env: env, bad: bad, key: keyOf(env), origin: r.Seq,
		drain: d, row: r.ParkedKey, urgent: r.Urgent}
}

// accountState returns the account when its sends may go, or a channel to wait on when
// they may not (stopped account, paused number). An account that cannot be resolved
// lets the drain release its rows: handle fails them or waits as for any send.
func (d *drain) accountState(log interface{ Warn(string, ...any) }) (*account.Account, <-chan struct{}) {
	s := d.q.s
	// Watch before resolving: a change between the two still wakes the wait.
	changed := s.opts.Accounts.Watch(d.tenant, d.phone)
	ctx, cancel := context.WithTimeout(d.q.ctx, 10*time.Second)
	acct, err := s.opts.Accounts.Resolve(ctx, d.tenant, d.phone)
	cancel()
	if err != nil {
		if !errors.Is(err, account.ErrNotFound) && d.q.ctx.Err() == nil {
			log.Warn("resolving account of parked sends", "err", err)
			return nil, waitChan(d.q.ctx, changed, s.cfg.RetryBaseDelay)
		}
		return nil, nil
	}
	now := time.Now()
	if acct.Usable(now) != nil {
		return acct, waitChan(d.q.ctx, changed, s.cfg.PausedRetryDelay)
	}
	if acct.PausedUntil != nil && acct.PausedUntil.After(now) {
		return acct, waitChan(d.q.ctx, changed, min(acct.PausedUntil.Sub(now), s.cfg.PausedRetryDelay))
	}
	return acct, nil
}

// waitChan is closed when changed is, after max, or when ctx ends.
func waitChan(ctx context.Context, changed <-chan struct{}, after time.Duration) <-chan struct{} {
	out := make(chan struct{})
	go func() {
		defer close(out)
		t := time.NewTimer(max(after, time.Millisecond))
		defer t.Stop()
		select {
		case <-changed:
		case <-t.C:
		case <-ctx.Done():
		}
	}()
	return out
}

func (d *drain) waitFor(ch <-chan struct{}) {
	select {
	case <-ch:
	case <-d.q.ctx.Done():
	}
}

func (d *drain) waitWake() {
	select {
	case <-d.wake:
	case <-d.q.ctx.Done():
	}
}

// waitUntilSettled waits until every released send settled; false if the partition
// went away first.
func (d *drain) waitUntilSettled() bool {
	for {
		d.mu.Lock()
		n := len(d.holding)
		d.mu.Unlock()
		if n == 0 {
			return true
		}
		if d.q.ctx.Err() != nil {
			return false
		}
		d.waitWake()
	}
}

// stop ends the drain with its partition: released sends settle first (those not
// finished stay in their rows for the next owner).
func (d *drain) stop() {
	for {
		d.mu.Lock()
		if len(d.holding) == 0 {
			d.running = false
			d.mu.Unlock()
			return
		}
		d.mu.Unlock()
		<-d.wake
	}
}

// holds reports whether the released job j must stay in its row: its drain is halted
// (the account cannot send), or a row parked since it was read may belong before it.
func (d *drain) holds(j *job) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.halted || j.epoch != d.epoch
}

// settle ends a released send: a finished one's row is deleted (then it is gone for
// good; a crash before the delete releases it again and its claim skips it); one that
// is not stays for a later release. halt stops the release of the rest.
func (d *drain) settle(j *job, finished, halt bool) {
	s := d.q.s
	if finished {
		for attempt := 1; ; attempt++ {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := s.batcher.Unpark(ctx, j.row)
			cancel()
			if err == nil {
				break
			}
			s.log.Warn("deleting released parked send", "message_id", j.env.ID, "err", err)
			if !retry.Sleep(d.q.ctx, retry.Backoff(attempt, s.cfg.RetryBaseDelay, transientMaxDelay, nil)) {
				finished = false // the row stays; its next release skips it
				halt = true      // and the drain reads from the top again for it
				break
			}
		}
	}
	d.mu.Lock()
	delete(d.holding, j.row.Seq)
	if finished {
		d.addRows(-1)
		if j.urgent {
			d.urgent--
		}
		s.stats.drained.Add(1)
		metrics.ParkedReleased.Inc()
	}
	if halt {
		d.halted = true
	}
	d.mu.Unlock()
	d.signal()
}

// parkInQueue parks j in its number's queue in Postgres and returns true once the row is
// durable (then j's offset may be committed); false if it could not be written before
// the partition went away (j is redelivered). The caller decided that the send cannot
// go now (why: a reason).
func (s *Sender) parkInQueue(j *job, d *drain, acct *account.Account, attempt int, why string, expected *time.Time) bool {
	env := *j.env
	env.Attempt = attempt
	env.NotBefore = nil
	env.Error = nil
	value, err := json.Marshal(&env)
	if err != nil {
		s.log.Error("encoding parked send", "message_id", env.ID, "err", err)
		return s.failForGood(j, nil, &queue.EnvelopeError{Title: err.Error()})
	}
	d.mu.Lock()
	d.parking++
	d.startLocked()
	d.mu.Unlock()
	p := message.Park{
		Key:            message.ParkedKey{Partition: j.part.ID, PhoneNumberID: d.phone, Seq: j.origin},
		Claim:          claimOf(j.env, acct),
		Urgent:         j.env.Urgent(),
		Envelope:       value,
		ExpectedSendAt: expected,
	}
	var res message.ParkResult
	ok := s.record(j, func(ctx context.Context) error {
		var err error
		res, err = s.batcher.Park(ctx, p)
		return err
	}, "parking send", "message_id", env.ID, "phone_number_id", d.phone)
	d.mu.Lock()
	d.parking--
	if ok && res.Inserted {
		switch {
		case p.Key.Seq < d.readMax:
			d.epoch++
			d.stale = true
		case res.Urgent:
			d.reread = true
		}
		d.parks++
		d.addRows(1)
		if res.Urgent {
			d.urgent++
		}
		if d.oldest.IsZero() {
			d.oldest = time.Now()
		}
	}
	// The drain may have stopped while this park was in flight (it found nothing): a
	// row written now needs it running again.
	if ok {
		d.startLocked()
	}
	d.mu.Unlock()
	d.signal()
	if !ok {
		return false
	}
	s.stats.queued.Add(1)
	metrics.Parked.WithLabelValues(why).Inc()
	return true
}

// parkedSeries returns the gauge a number's parked count goes to: its own series while
// fewer than metrics.ParkedSeriesMax numbers have one, else the shared "other".
func (s *Sender) parkedSeries(phone string) (prometheus.Gauge, bool) {
	s.seriesMu.Lock()
	defer s.seriesMu.Unlock()
	if s.series < metrics.ParkedSeriesMax {
		s.series++
		return metrics.ParkedMessages.WithLabelValues(phone), true
	}
	return metrics.ParkedMessages.WithLabelValues("other"), false
}

func (s *Sender) releaseSeries(phone string, own bool, rows int64) {
	s.seriesMu.Lock()
	defer s.seriesMu.Unlock()
	if own {
		s.series--
		metrics.ParkedMessages.DeleteLabelValues(phone)
		return
	}
	metrics.ParkedMessages.WithLabelValues("other").Sub(float64(rows))
}

// reportOldest sets aerogate_parked_oldest_age_seconds every second from the heads of
// the drains this instance runs.
func (s *Sender) reportOldest(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			metrics.ParkedOldestAge.Set(0)
			return
		case <-t.C:
		}
		var oldest time.Time
		if g := s.gen.Load(); g != nil {
			for _, q := range g.queues {
				q.mu.Lock()
				for _, d := range q.drains {
					d.mu.Lock()
					if d.running && !d.oldest.IsZero() && (oldest.IsZero() || d.oldest.Before(oldest)) {
						oldest = d.oldest
					}
					d.mu.Unlock()
				}
				q.mu.Unlock()
			}
		}
		age := 0.0
		if !oldest.IsZero() {
			age = time.Since(oldest).Seconds()
		}
		metrics.ParkedOldestAge.Set(age)
	}
}
