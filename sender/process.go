package sender

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/graph"
	"github.com/aerostic/aerogate/internal/message"
	"github.com/aerostic/aerogate/internal/queue"
	"github.com/aerostic/aerogate/internal/retry"
)

// job is one fetched message on its way through a lane.
type job struct {
	part   *partition
	offset int64
	// env is the envelope; when bad is set it holds what could be read of a malformed one.
	env *queue.Envelope
	bad error
	key recipientKey
	// origin is the message's offset in its wa.sends partition (carried on the retry
	// topic in a header), which orders a recipient's messages; -1 if unknown.
	origin int64
	// queues are the per-number queues of the job's partition index in the job's
	// generation (nil if this instance does not own that wa.sends partition).
	queues *partQueues

	// A job released from a per-number queue: drain is its number's drain, row its row
	// (origin is the row's seq). It settles by deleting the row, not by an offset.
	drain  *drain
	row    message.ParkedKey
	urgent bool
	epoch  uint64 // the drain's epoch when it was released
	// halt: the job stays in its row because the account cannot send (set by handle).
	halt bool
}

// settle ends the job: its offset may be committed (finished) or is redelivered; a
// released job's row is deleted (finished) or stays.
func (j *job) settle(finished bool) {
	if j.drain != nil {
		j.drain.settle(j, finished, j.halt)
		return
	}
	j.part.finish(j.offset, finished)
}

// OriginHeader is the Kafka header of a wa.sends.retry message that carries its origin:
// the offset the message had in its wa.sends partition, which orders a recipient's
// messages (decimal).
const OriginHeader = "aerogate-origin-offset"

func originOf(m kafka.Message, retry bool) int64 {
	if !retry {
		return m.Offset
	}
	for _, h := range m.Headers {
		if h.Key == OriginHeader {
			if o, err := strconv.ParseInt(string(h.Value), 10, 64); err == nil && o >= 0 {
				return o
			}
		}
	}
	return -1
}

// decodeSend parses a value of wa.sends or wa.sends.retry. On error the envelope holds
// whatever could be read, for the DLQ record and the failed row.
func decodeSend(value []byte) (*queue.Envelope, error) {
	env, err := queue.Decode(value)
	if err != nil {
		var lenient queue.Envelope
		_ = json.Unmarshal(value, &lenient)
		return &lenient, err
	}
	if _, err := uuid.Parse(env.ID); err != nil {
		return env, fmt.Errorf("decoding envelope: %w: id is not a uuid", queue.ErrInvalidEnvelope)
	}
	if env.Recipient == "" {
		// The payload's "to" is what Graph will use; order by it.
		var p struct {
			To string `json:"to"`
		}
		if json.Unmarshal(env.Payload, &p) == nil {
			env.Recipient = p.To
		}
	}
	return env, nil
}

func keyOf(env *queue.Envelope) recipientKey {
	return recipientKey{TenantID: env.TenantID, PhoneNumberID: env.PhoneNumberID, To: env.Recipient}
}

// transientMaxDelay caps the waits between tries when Postgres or the account cache
// fails: those are not the message's fault and do not count as attempts.
const transientMaxDelay = 5 * time.Second

// process runs one job in its lane and settles its offset. Two copies of one message id
// never run at once, whatever their lanes (see inFlight).
func (s *Sender) process(j *job) {
	if j.bad == nil {
		if !s.inFlight.acquire(j.part.ctx, j.env.ID) {
			j.settle(false) // abandoned: redelivered
			return
		}
		finished := s.handle(j)
		s.inFlight.release(j.env.ID)
		j.settle(finished)
		return
	}
	finished := s.handle(j)
	j.settle(finished)
}

// inFlight is the set of message ids being handled. Copies of one id reach the sender
// when a client retried a send after an unknown answer (504) with the same
// Idempotency-Key, when a broker appended a write it never confirmed, or on redelivery;
// they may name different recipients (a key reused with another body before the gateway
// bound keys to requests), so their lanes do not order them. The later copy waits here
// until the earlier one is finished; its claim then finds the outcome and skips.
type inFlight struct {
	mu sync.Mutex
	// m holds the ids being handled; the channel, made when a copy starts waiting, is
	// closed when the id is released.
	m map[string]chan struct{}
}

func newInFlight() *inFlight { return &inFlight{m: make(map[string]chan struct{})} }

// acquire waits until no other copy of id is being handled and marks id as handled; it
// returns false, without the mark, if ctx ends first.
func (f *inFlight) acquire(ctx context.Context, id string) bool {
	for {
		f.mu.Lock()
		ch, busy := f.m[id]
		if !busy {
			f.m[id] = nil
			f.mu.Unlock()
			return true
		}
		if ch == nil {
			ch = make(chan struct{})
			f.m[id] = ch
		}
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

func (f *inFlight) release(id string) {
	f.mu.Lock()
	ch := f.m[id]
	delete(f.m, id)
	f.mu.Unlock()
	if ch != nil {
		close(ch)
	}
}

// heldWait is how long to wait before looking again at a message another live sender
// holds until until (a Postgres timestamp, so a little margin), within [10ms, lease].
func heldWait(until time.Time, lease time.Duration) time.Duration {
	return min(max(time.Until(until)+10*time.Millisecond, 10*time.Millisecond), lease)
}

// handle takes a message as far as it goes. It returns true when the message is
// finished (its offset may be committed) and false when it was abandoned because its
// partition is going away (it will be redelivered).
func (s *Sender) handle(j *job) bool {
	ctx := j.part.ctx
	if ctx.Err() != nil {
		return false
	}
	env := j.env
	if j.bad != nil {
		return s.failForGood(j, nil, &queue.EnvelopeError{Title: j.bad.Error()})
	}
	if j.drain != nil && j.drain.holds(j) {
		// An earlier release of this number found its account stopped, or a send was
		// parked since this one was read that may belong before it: it stays in its
		// row, so nothing overtakes what waits.
		return false
	}
	// Recipient order across the retry topic (the rule is at parkedSet).
	if j.origin >= 0 {
		if j.part.retry {
			s.parked.remove(j.key, j.origin)
		}
		if s.parked.hasBefore(j.key, j.origin) {
			s.stats.followed.Add(1)
			return s.park(j, env.Attempt, nil, nil, "following an earlier message of the recipient")
		}
	}

	attempt := env.Attempt // failed Graph attempts so far
	transient := 0         // consecutive database/cache failures, for their backoff
	tokenRetried := false
	for {
		acct, err := s.opts.Accounts.Resolve(ctx, env.TenantID, env.PhoneNumberID)
		if errors.Is(err, account.ErrNotFound) {
			// The gateway found the account when it accepted the message: before failing
			// it for good, make sure "not found" is not a stale negative cache entry.
			s.opts.Accounts.Invalidate(env.TenantID, env.PhoneNumberID)
			acct, err = s.opts.Accounts.Resolve(ctx, env.TenantID, env.PhoneNumberID)
		}
		if errors.Is(err, account.ErrNotFound) {
			return s.failForGood(j, nil, &queue.EnvelopeError{Title: "no whatsapp account for this tenant and phone number id"})
		}
		if err != nil {
			transient++
			s.log.Warn("resolving account", "tenant", env.TenantID, "phone_number_id", env.PhoneNumberID, "err", err)
			if !retry.Sleep(ctx, retry.Backoff(transient, s.cfg.RetryBaseDelay, transientMaxDelay, nil)) {
				return false
			}
			continue
		}
		now := time.Now()
		if werr := acct.Usable(now); werr != nil {
			return s.wait(j, acct, attempt, reasonStopped, nil, &queue.EnvelopeError{Title: werr.Error()})
		}
		if acct.PausedUntil != nil && acct.PausedUntil.After(now) {
			return s.wait(j, acct, attempt, reasonPaused, acct.PausedUntil,
				&queue.EnvelopeError{Title: "number paused: " + acct.PausedReason})
		}

		// The number's pace is waited out before the claim, so that a claim's lease covers
		// only the Graph call and the recording of its outcome. A released job's drain
		// has waited for it already.
		if j.drain == nil {
			if done, finished := s.pace(j, acct, attempt); done {
				return finished
			}
		}
		claim, err := s.batcher.Claim(ctx, claimOf(env, acct))
		if err != nil {
			if ctx.Err() != nil {
				return false
			}
			transient++
			s.log.Warn("claiming message", "message_id", env.ID, "err", err)
			if !retry.Sleep(ctx, retry.Backoff(transient, s.cfg.RetryBaseDelay, transientMaxDelay, nil)) {
				return false
			}
			continue
		}
		transient = 0
		if !claim.Claimed {
			if !claim.HeldUntil.IsZero() {
				// Another live sender holds the claim: a partition that moved while its
				// Graph call ran, or a crashed sender whose lease has not lapsed. Wait for
				// its outcome (then the claim skips) or for the lapse (then it is ours).
				s.stats.held.Add(1)
				if !retry.Sleep(ctx, heldWait(claim.HeldUntil, s.opts.ClaimLease)) {
					return false
				}
				continue
			}
			s.stats.skipped.Add(1)
			sendsSkipped.Inc()
			return true
		}
		// From here the call runs to its end even if the partition is revoked: abandoning
		// it would leave Meta's answer unrecorded and widen the duplicate window. The wait
		// is short: admission paced the number already; this evens out the clumps that
		// batched claims make.
		_ = s.calls.get(acct.PhoneNumberID, acct.ThroughputMPS).Wait(context.WithoutCancel(ctx))
		s.stats.graphCalls.Add(1)
		res, err := s.opts.Graph.SendMessage(context.WithoutCancel(ctx), acct.PhoneNumberID, acct.AccessToken.Reveal(), env.Payload)
		if err == nil {
			return s.recordSent(j, acct, res)
		}

		gerr := toEnvelopeError(err)
		log := s.log.With("message_id", env.ID, "tenant", env.TenantID, "phone_number_id", acct.PhoneNumberID,
			"code", gerr.Code, "title", gerr.Title)
		switch action := graph.Classify(err); action {
		case graph.ActionRetry, graph.ActionRetryRecipient:
			attempt++
			if attempt >= s.cfg.MaxAttempts {
				log.Warn("send failed, attempts exhausted", "attempts", attempt)
				return s.failForGood(j, acct, gerr)
			}
			s.stats.retried.Add(1)
			countSend(outcomeRetried, gerr.Code)
			// A pair rate error (131056) delays only this recipient: the lane sleeps,
			// other recipients of the number keep going.
			d := retry.Backoff(attempt, s.cfg.RetryBaseDelay, s.cfg.RetryMaxDelay, nil)
			if action == graph.ActionRetryRecipient {
				waitsPair.Inc()
				waitSecondsPair.Observe(d.Seconds())
			}
			if d <= s.cfg.InProcessRetryMax {
				log.Debug("send failed, retrying in process", "action", action, "delay", d)
				if !retry.Sleep(ctx, d) {
					return false
				}
				continue
			}
			nb := time.Now().Add(d)
			log.Debug("send failed, retrying later", "action", action, "not_before", nb)
			return s.park(j, attempt, &nb, gerr, "retry")
		case graph.ActionStopAccount:
			// The token may have been replaced since it was read: try the new one at once.
			s.opts.Accounts.Invalidate(env.TenantID, env.PhoneNumberID)
			if !tokenRetried {
				if fresh, ferr := s.opts.Accounts.Resolve(ctx, env.TenantID, env.PhoneNumberID); ferr == nil &&
					fresh.AccessToken != acct.AccessToken && fresh.Usable(time.Now()) == nil {
					tokenRetried = true
					continue
				}
			}
			log.Warn("access token refused, marking the account invalid")
			if err := s.opts.AccountRepo.SetTokenStatus(ctx, acct.ID, account.StatusInvalid, gerr.Title); err != nil {
				log.Error("marking account invalid", "account_id", acct.ID, "err", err)
			}
			s.opts.Accounts.Invalidate(env.TenantID, env.PhoneNumberID)
			return s.wait(j, acct, attempt, reasonStopped, nil, gerr)
		case graph.ActionPauseNumber:
			until := time.Now().Add(s.cfg.PausedRetryDelay)
			log.Warn("number restricted, pausing it", "until", until)
			if err := s.opts.AccountRepo.Pause(ctx, acct.ID, until, gerr.Title); err != nil {
				log.Error("pausing number", "account_id", acct.ID, "err", err)
			}
			s.opts.Accounts.Invalidate(env.TenantID, env.PhoneNumberID)
			return s.wait(j, acct, attempt, reasonPaused, &until, gerr)
		default:
			log.Info("send failed for good")
			return s.failForGood(j, acct, gerr)
		}
	}
}

// wait handles a send whose account cannot send now (reason stopped or paused, until
// the pause's end if known): it waits in its number's queue in Postgres (a released
// job stays in its row and halts its drain) until the account changes or the pause
// ends. Without a queue for it (a retry message whose wa.sends partition this instance
// does not own, or one without an origin) it goes to wa.sends.retry as before.
func (s *Sender) wait(j *job, acct *account.Account, attempt int, reason string, until *time.Time, e *queue.EnvelopeError) bool {
	s.stats.waiting.Add(1)
	if reason == reasonPaused {
		waitsPaused.Inc()
	}
	if j.drain != nil {
		j.halt = true
		return false
	}
	if d := s.queueOf(j); d != nil {
		var expected *time.Time
		if until != nil {
			at := d.estimate(*until, acct.ThroughputMPS, j.env.Urgent())
			expected = &at
		}
		return s.parkInQueue(j, d, acct, attempt, reason, expected)
	}
	nb := time.Now().Add(s.cfg.PausedRetryDelay)
	if until != nil && until.Before(nb) {
		nb = *until
	}
	return s.park(j, attempt, &nb, e, "account cannot send: "+reason)
}

// queueOf returns the drain state of j's number in j's partition, or nil when j cannot
// be parked in Postgres (no queue for its partition, or no origin to order it by).
func (s *Sender) queueOf(j *job) *drain {
	if j.queues == nil || j.origin < 0 {
		return nil
	}
	return j.queues.get(j.env.PhoneNumberID, j.env.TenantID)
}

// pace holds j to its number's rate. A send whose number already has sends parked
// parks behind them (so nothing overtakes them); one whose number's bucket would make
// it wait more than ParkAfter parks instead of holding its partition's slot. Otherwise
// it waits its turn and goes on (done false). done true means j is settled with
// finished.
func (s *Sender) pace(j *job, acct *account.Account, attempt int) (done, finished bool) {
	ctx := j.part.ctx
	lim := s.limiters.get(acct.PhoneNumberID, acct.ThroughputMPS)
	d := s.queueOf(j)
	if d == nil {
		if err := s.limiters.wait(ctx, acct.PhoneNumberID, acct.ThroughputMPS); err != nil {
			return true, false // abandoned: redelivery sends it once
		}
		return false, false
	}
	// The number's direct sends decide one at a time (under d.mu), so each sees the
	// bucket as the ones before it left it: none waits more than ParkAfter, and a send
	// that parks takes nothing from the bucket.
	d.mu.Lock()
	if d.activeLocked() {
		d.mu.Unlock()
		at := d.estimate(time.Now(), acct.ThroughputMPS, j.env.Urgent())
		return true, s.parkInQueue(j, d, acct, attempt, reasonBehind, &at)
	}
	now := time.Now()
	if tokens := lim.TokensAt(now); tokens < 1 {
		if wait := time.Duration((1 - tokens) / float64(lim.Limit()) * float64(time.Second)); wait > s.opts.ParkAfter {
			d.mu.Unlock()
			at := now.Add(wait)
			return true, s.parkInQueue(j, d, acct, attempt, reasonPacing, &at)
		}
	}
	r := lim.ReserveN(now, 1)
	d.mu.Unlock()
	if delay := r.DelayFrom(now); delay > 0 {
		waitsNumber.Inc()
		waitSecondsNumber.Observe(delay.Seconds())
	}
	if !retry.Sleep(ctx, r.DelayFrom(now)) {
		r.Cancel()
		return true, false
	}
	return false, false
}

func claimOf(env *queue.Envelope, acct *account.Account) message.Claim {
	c := message.Claim{
		ID:             env.ID,
		TenantID:       env.TenantID,
		AccountID:      env.AccountID,
		PhoneNumberID:  env.PhoneNumberID,
		Recipient:      env.Recipient,
		IdempotencyKey: env.IdempotencyKey,
		AcceptedAt:     env.AcceptedAt,
	}
	if acct != nil {
		c.AccountID = acct.ID
		c.PhoneNumberID = acct.PhoneNumberID
	}
	return c
}

func toEnvelopeError(err error) *queue.EnvelopeError {
	var gerr *graph.Error
	if errors.As(err, &gerr) {
		return &queue.EnvelopeError{Code: gerr.Code, Subcode: gerr.Subcode, Title: gerr.Title}
	}
	return &queue.EnvelopeError{Title: err.Error()}
}

// recordSent stores wamid and sent. If Postgres cannot be reached it keeps trying until
// the partition goes away; then the message is redelivered and sent again (the
// documented window: answered but not recorded).
func (s *Sender) recordSent(j *job, acct *account.Account, res graph.SendResult) bool {
	sent := message.Sent{Claim: claimOf(j.env, acct), WAMID: res.WAMID, SentAt: time.Now()}
	if !s.record(j, func(ctx context.Context) error { return s.batcher.MarkSent(ctx, sent) },
		"recording sent message", "message_id", sent.ID, "wamid", sent.WAMID) {
		return false
	}
	s.stats.sent.Add(1)
	sendsSent.Inc()
	return true
}

// record runs write until it succeeds, logging each failure with msg and attrs, or until
// the partition goes away (false: the message is abandoned and redelivered). A write
// outlives the partition's context by up to 10s: an outcome of a Graph call already made
// is worth keeping.
func (s *Sender) record(j *job, write func(context.Context) error, msg string, attrs ...any) bool {
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(j.part.ctx), 10*time.Second)
		err := write(ctx)
		cancel()
		if err == nil {
			return true
		}
		s.log.Error(msg, append(attrs, "err", err)...)
		if !retry.Sleep(j.part.ctx, retry.Backoff(attempt, s.cfg.RetryBaseDelay, transientMaxDelay, nil)) {
			return false
		}
	}
}

// failForGood writes the envelope with its error to the DLQ, then records the message
// failed. The DLQ write comes first: a crash between the two redelivers the message
// (still sending) rather than losing its dead letter.
func (s *Sender) failForGood(j *job, acct *account.Account, e *queue.EnvelopeError) bool {
	env := *j.env
	env.Error = e
	env.NotBefore = nil
	value, err := json.Marshal(&env)
	if err != nil {
		s.log.Error("encoding dead letter", "message_id", env.ID, "err", err)
		return false
	}
	if !s.produce(j, s.dlqPub, value) {
		return false
	}
	s.stats.dlq.Add(1)
	if _, err := uuid.Parse(env.ID); err != nil || env.TenantID == "" {
		countSend(outcomeFailed, e.Code)
		// Malformed beyond a row of its own: the dead letter is the whole record.
		s.log.Warn("malformed envelope to the dead-letter topic", "topic", j.part.Topic, "partition", j.part.ID,
			"offset", j.offset, "reason", e.Title)
		return true
	}
	f := message.Failure{Claim: claimOf(j.env, acct), ErrorCode: e.Code, ErrorTitle: e.Title}
	if !s.record(j, func(ctx context.Context) error { return s.batcher.MarkFailed(ctx, f) },
		"recording failed message", "message_id", env.ID) {
		return false
	}
	s.stats.failed.Add(1)
	countSend(outcomeFailed, e.Code)
	return true
}

// park hands the message to wa.sends.retry (attempt failed attempts so far, not before
// nb) and records it in the parked set first, so later messages of the recipient follow.
// e is why; nil means the message is only following an earlier one.
func (s *Sender) park(j *job, attempt int, nb *time.Time, e *queue.EnvelopeError, why string) bool {
	env := *j.env
	env.Attempt = attempt
	env.NotBefore = nb
	env.Error = e
	value, err := queue.Encode(&env)
	if err != nil {
		s.log.Error("encoding retry", "message_id", env.ID, "err", err)
		return s.failForGood(j, nil, &queue.EnvelopeError{Title: err.Error()})
	}
	if j.origin >= 0 {
		s.parked.add(j.key, j.origin)
	}
	if !s.produce(j, s.retryPub, value) {
		if j.origin >= 0 {
			s.parked.remove(j.key, j.origin)
		}
		return false
	}
	s.stats.parked.Add(1)
	code := 0
	if e != nil {
		code = e.Code
	}
	countSend(outcomeParked, code)
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("message to the retry topic", "message_id", env.ID, "why", why, "attempt", attempt, "not_before", nb)
	}
	return true
}

// produce writes value to pub, keyed by tenant, on the partition index the message came
// from, retrying until the broker acknowledges or the partition goes away.
func (s *Sender) produce(j *job, pub *queue.Producer, value []byte) bool {
	msg := kafka.Message{Key: []byte(j.env.TenantID), Value: value, Partition: j.part.ID}
	if j.origin >= 0 {
		msg.Headers = []kafka.Header{{Key: OriginHeader, Value: strconv.AppendInt(nil, j.origin, 10)}}
	}
	for attempt := 1; ; attempt++ {
		err := pub.WriteMessages(context.WithoutCancel(j.part.ctx), msg)
		if err == nil {
			return true
		}
		s.log.Warn("writing to kafka", "topic", pub.Topic(), "message_id", j.env.ID, "err", err)
		if !retry.Sleep(j.part.ctx, retry.Backoff(attempt, 50*time.Millisecond, 2*time.Second, nil)) {
			return false
		}
	}
}

// samePartition writes a message to the partition index it was read from (carried in
// Message.Partition), so partition p of wa.sends.retry holds exactly the tenants of
// partition p of wa.sends whatever partitioner the gateway used, and the range assignor
// gives both to the same instance. An index the topic lacks falls back to murmur2 of
// the key (tenant).
type samePartition struct {
	fallback kafka.Murmur2Balancer
}

func (b *samePartition) Balance(msg kafka.Message, partitions ...int) int {
	for _, p := range partitions {
		if p == msg.Partition {
			return p
		}
	}
	return b.fallback.Balance(msg, partitions...)
}
