package message

// The sender's side of the messages table: claiming a message before its Graph call and
// recording the outcome after it, in batches.
//
// Exactly one Graph call per message rests on the claim: a message moves to sending (with
// attempts+1) only while it is unknown or accepted, or sending under a claim that is the
// caller's own or has lapsed, so a redelivered message that is already sent, delivered,
// read or failed is skipped, and one that another live sender holds waits for it (the
// claim is exclusive: a Lease names its holder and its end). The one window left: a
// message claimed sending whose Graph call was in flight, or answered but not yet
// recorded as sent, when the process died, is claimed again once the dead holder's lease
// lapsed, and sent again. That window holds at most the requests in flight at the moment
// of the crash.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

var (
	// ErrBatcherClosed is returned by a Batcher after Close.
	ErrBatcherClosed = errors.New("message batcher closed")
	// ErrInvalidID means a message id is not a UUID (so no row can have it).
	ErrInvalidID = errors.New("message id is not a uuid")
)

// Claim is a message the sender is about to send. The row is created if the gateway has
// not inserted it yet, so every field of the envelope is needed.
type Claim struct {
	ID             string
	TenantID       string
	AccountID      string
	PhoneNumberID  string
	Recipient      string
	IdempotencyKey string
	AcceptedAt     time.Time
}

// ClaimResult says whether the caller may call Graph.
type ClaimResult struct {
	// Claimed is true when the message is now sending under the caller's lease and the
	// caller should send it; false when it is final already (sent, delivered, read or
	// failed) and must be skipped, or when another holder's lease is live (HeldUntil).
	Claimed bool
	// Attempts is the number of claims of the message so far, this one included.
	Attempts int
	// HeldUntil, when not zero, is when another holder's live claim lapses: the caller
	// must neither send nor skip the message, but claim it again later (by then the
	// holder has recorded the outcome, or crashed and the claim can be taken over).
	HeldUntil time.Time
}

// Lease is who claims and for how long. A claim is exclusive until it expires: it must
// outlast the Graph call and the recording of its outcome. The same holder may claim its
// own message again (a retry renews the lease).
type Lease struct {
	Holder string        // a UUID naming the claiming process; NewHolder makes one
	TTL    time.Duration // default DefaultLeaseTTL
}

// DefaultLeaseTTL is a claim's lifetime when a Lease names none.
const DefaultLeaseTTL = 30 * time.Second

// NewHolder returns a fresh holder id for a Lease.
func NewHolder() string { return uuid.NewString() }

func (l Lease) args() (string, int64, error) {
	h, err := uuid.Parse(l.Holder)
	if err != nil {
		return "", 0, fmt.Errorf("claim holder %q: %w", truncate(l.Holder, 64), ErrInvalidID)
	}
	ttl := l.TTL
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	return h.String(), ttl.Milliseconds(), nil
}

// Sent is a successful Graph call. The row is created (sent) if it does not exist, like
// a Failure's, so the message's identity is needed.
type Sent struct {
	Claim
	WAMID  string
	SentAt time.Time
}

// Failure is a message that failed for good. The row is created if it does not exist
// (a message can fail before it was ever claimed, e.g. for an unknown account).
type Failure struct {
	Claim
	ErrorCode  int
	ErrorTitle string
}

// claimSQL moves each message to sending under the lease ($8 holder, $9 milliseconds),
// creating the row when the gateway has not inserted it yet. ON CONFLICT ... WHERE keeps
// a final row, and one another holder's live lease covers, as it is; such rows are not
// returned, and heldSQL tells the two apart.
const claimSQL = `
INSERT INTO messages AS m (id, tenant_id, account_id, phone_number_id, recipient, idempotency_key,
                           status, attempts, accepted_at, updated_at, claim_holder, claim_expires_at)
SELECT t.id::uuid, t.tenant_id, t.account_id::uuid, t.phone_number_id, t.recipient,
       NULLIF(t.idempotency_key, ''), 'sending', 1, t.accepted_at, now(),
       $8::uuid, now() + $9::bigint * interval '1 millisecond'
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[])
       AS t(id, tenant_id, account_id, phone_number_id, recipient, idempotency_key, accepted_at)
ON CONFLICT (id) DO UPDATE
   SET status = 'sending', attempts = m.attempts + 1, updated_at = now(),
       claim_holder = excluded.claim_holder, claim_expires_at = excluded.claim_expires_at
 WHERE m.status IN ('unknown', 'accepted', 'queued')
    OR (m.status = 'sending' AND (m.claim_holder IS NULL OR m.claim_holder = excluded.claim_holder
                                  OR m.claim_expires_at <= now()))
RETURNING m.id::text, m.attempts`

// heldSQL reads the rows a claim did not take: sending ones are held by another live
// lease (until claim_expires_at), the others are final.
const heldSQL = `
SELECT id::text, status = 'sending', coalesce(claim_expires_at, now())
  FROM messages WHERE id = ANY($1::uuid[])`

// markSentSQL records wamid and sent. Status only moves forward: a row that a webhook
// already moved to delivered or read keeps its status; a failed row stays failed.
//
// It is an upsert on the primary key rather than an UPDATE joined to unnest: the join's
// plan is Postgres's choice, and a cached generic plan made while the table was small
// (a new database, before autovacuum's first ANALYZE) hash-joins a sequential scan of
// the whole table for every batch; the arbiter index is one lookup per row whatever the
// statistics say.
const markSentSQL = `
INSERT INTO messages AS m (id, tenant_id, account_id, phone_number_id, recipient, idempotency_key,
                           status, attempts, wamid, accepted_at, sent_at, updated_at)
SELECT t.id::uuid, t.tenant_id, t.account_id::uuid, t.phone_number_id, t.recipient,
       NULLIF(t.idempotency_key, ''), 'sent', 1, t.wamid, t.accepted_at, t.sent_at, now()
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[],
              $8::text[], $9::timestamptz[])
       AS t(id, tenant_id, account_id, phone_number_id, recipient, idempotency_key, accepted_at,
            wamid, sent_at)
ON CONFLICT (id) DO UPDATE
   SET status = CASE WHEN m.status IN ('unknown', 'accepted', 'queued', 'sending') THEN 'sent' ELSE m.status END,
       wamid = coalesce(m.wamid, excluded.wamid),
       sent_at = coalesce(m.sent_at, excluded.sent_at),
       updated_at = now()
 WHERE m.status <> 'failed'`

const markFailedSQL = `
INSERT INTO messages AS m (id, tenant_id, account_id, phone_number_id, recipient, idempotency_key,
                           status, error_code, error_title, accepted_at, updated_at)
SELECT t.id::uuid, t.tenant_id, t.account_id::uuid, t.phone_number_id, t.recipient,
       NULLIF(t.idempotency_key, ''), 'failed', t.error_code, t.error_title, t.accepted_at, now()
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[],
              $8::int[], $9::text[])
       AS t(id, tenant_id, account_id, phone_number_id, recipient, idempotency_key, accepted_at,
            error_code, error_title)
ON CONFLICT (id) DO UPDATE
   SET status = 'failed', error_code = excluded.error_code, error_title = excluded.error_title,
       updated_at = now()
 WHERE m.status IN ('unknown', 'accepted', 'queued', 'sending')`

// ClaimMany claims msgs under lease in one statement and returns one result per
// message, in order. An id may appear once per call.
func (r *Repository) ClaimMany(ctx context.Context, lease Lease, msgs []Claim) ([]ClaimResult, error) {
	holder, ttl, err := lease.args()
	if err != nil {
		return nil, err
	}
	b := &pgx.Batch{}
	res := make([]ClaimResult, len(msgs))
	queueClaims(b, msgs, res, holder, ttl)
	if b.Len() == 0 {
		return res, nil
	}
	if err := r.pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("claiming %d messages: %w", len(msgs), err)
	}
	if err := r.readHeld(ctx, msgs, res); err != nil {
		return nil, err
	}
	return res, nil
}

// readHeld fills HeldUntil for the messages a claim did not take that another holder's
// lease covers. It costs a round trip only when some claim was not taken (a redelivery
// of a final message, or a copy of one another sender is sending).
func (r *Repository) readHeld(ctx context.Context, msgs []Claim, res []ClaimResult) error {
	var ids []string
	index := map[string]int{}
	for i := range msgs {
		if !res[i].Claimed {
			id := canonicalID(msgs[i].ID)
			ids = append(ids, id)
			index[id] = i
		}
	}
	if len(ids) == 0 {
		return nil
	}
	rows, err := r.pool.Query(ctx, heldSQL, ids)
	if err != nil {
		return fmt.Errorf("reading %d claims held elsewhere: %w", len(ids), err)
	}
	var id string
	var sending bool
	var until time.Time
	_, err = pgx.ForEachRow(rows, []any{&id, &sending, &until}, func() error {
		if i, ok := index[id]; ok && sending {
			res[i].HeldUntil = until
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("reading %d claims held elsewhere: %w", len(ids), err)
	}
	return nil
}

// MarkSentMany records successful sends in one statement.
func (r *Repository) MarkSentMany(ctx context.Context, sent []Sent) error {
	if len(sent) == 0 {
		return nil
	}
	if _, err := r.pool.Exec(ctx, markSentSQL, sentColumns(sent)...); err != nil {
		return fmt.Errorf("recording %d sent messages: %w", len(sent), err)
	}
	return nil
}

// MarkFailedMany records messages that failed for good in one statement.
func (r *Repository) MarkFailedMany(ctx context.Context, failed []Failure) error {
	if len(failed) == 0 {
		return nil
	}
	if _, err := r.pool.Exec(ctx, markFailedSQL, failedColumns(failed)...); err != nil {
		return fmt.Errorf("recording %d failed messages: %w", len(failed), err)
	}
	return nil
}

// queueClaims adds the claim statement for msgs to b, filling res when it runs.
func queueClaims(b *pgx.Batch, msgs []Claim, res []ClaimResult, holder string, ttlMs int64) {
	if len(msgs) == 0 {
		return
	}
	cols := makeRowColumns(len(msgs))
	index := make(map[string]int, len(msgs))
	for i := range msgs {
		cols.add(&msgs[i])
		index[cols.ids[i]] = i
	}
	// Rows come back by id, so the columns may be reordered (args sorts them).
	b.Queue(claimSQL, cols.args(holder, ttlMs)...).Query(func(rows pgx.Rows) error {
		var id string
		var attempts int
		_, err := pgx.ForEachRow(rows, []any{&id, &attempts}, func() error {
			if i, ok := index[id]; ok {
				res[i] = ClaimResult{Claimed: true, Attempts: attempts}
			}
			return nil
		})
		return err
	})
}

// sentColumns returns the mark-sent arguments in id order (see rowColumns.args).
func sentColumns(sent []Sent) []any {
	ids := make([]string, len(sent))
	for i := range sent {
		ids[i] = canonicalID(sent[i].ID)
	}
	cols := makeRowColumns(len(sent))
	wamids := make([]string, len(sent))
	ats := make([]time.Time, len(sent))
	for i, j := range idOrder(ids) {
		cols.add(&sent[j].Claim)
		wamids[i], ats[i] = sent[j].WAMID, sent[j].SentAt
		if ats[i].IsZero() {
			ats[i] = time.Now()
		}
	}
	return cols.args(wamids, ats)
}

// failedColumns returns the mark-failed arguments in id order (see rowColumns.args).
func failedColumns(failed []Failure) []any {
	ids := make([]string, len(failed))
	for i := range failed {
		ids[i] = canonicalID(failed[i].ID)
	}
	cols := makeRowColumns(len(failed))
	codes := make([]int32, len(failed))
	titles := make([]string, len(failed))
	for i, j := range idOrder(ids) {
		cols.add(&failed[j].Claim)
		codes[i], titles[i] = int32(failed[j].ErrorCode), failed[j].ErrorTitle
	}
	return cols.args(codes, titles)
}

// idOrder returns the indexes of ids in ascending id order.
func idOrder(ids []string) []int {
	order := make([]int, len(ids))
	for i := range order {
		order[i] = i
	}
	if !slices.IsSorted(ids) {
		slices.SortStableFunc(order, func(a, b int) int { return strings.Compare(ids[a], ids[b]) })
	}
	return order
}

// rowColumns is a batch of messages' identity, one array per column: the unnest
// arguments $1–$7 of every statement that may create a message row.
type rowColumns struct {
	ids, tenants, accounts, phones, recipients, keys []string
	accepted                                         []time.Time
}

func makeRowColumns(n int) rowColumns {
	return rowColumns{
		ids: make([]string, 0, n), tenants: make([]string, 0, n), accounts: make([]string, 0, n),
		phones: make([]string, 0, n), recipients: make([]string, 0, n), keys: make([]string, 0, n),
		accepted: make([]time.Time, 0, n),
	}
}

func (c *rowColumns) add(m *Claim) {
	at := m.AcceptedAt
	if at.IsZero() {
		at = time.Now()
	}
	c.ids = append(c.ids, canonicalID(m.ID))
	c.tenants = append(c.tenants, m.TenantID)
	c.accounts = append(c.accounts, accountOrNil(m.AccountID))
	c.phones = append(c.phones, m.PhoneNumberID)
	c.recipients = append(c.recipients, m.Recipient)
	c.keys = append(c.keys, m.IdempotencyKey)
	c.accepted = append(c.accepted, at)
}

// args returns the columns as statement arguments, followed by extra, with the rows
// sorted by id. Every statement that writes message rows (the gateway's accepted insert,
// claims, outcomes) takes its row locks in id order, so concurrent batches wait on
// each other instead of deadlocking: an accepted insert and a claim of the same rows in
// different orders deadlocked, and the failed batch was rewritten row by row. Extra
// columns are not reordered: a caller with extra columns adds its rows in id order.
func (c *rowColumns) args(extra ...any) []any {
	if !slices.IsSorted(c.ids) {
		order := idOrder(c.ids)
		c.ids = permute(c.ids, order)
		c.tenants = permute(c.tenants, order)
		c.accounts = permute(c.accounts, order)
		c.phones = permute(c.phones, order)
		c.recipients = permute(c.recipients, order)
		c.keys = permute(c.keys, order)
		c.accepted = permute(c.accepted, order)
	}
	return append([]any{c.ids, c.tenants, c.accounts, c.phones, c.recipients, c.keys, c.accepted}, extra...)
}

// permute returns s reordered so that element i is s[order[i]].
func permute[T any](s []T, order []int) []T {
	out := make([]T, len(s))
	for i, j := range order {
		out[i] = s[j]
	}
	return out
}

// canonicalID returns the UUID in its canonical text form (what RETURNING id::text gives
// back), or id unchanged when it is not a UUID (callers validate first).
func canonicalID(id string) string {
	u, err := uuid.Parse(id)
	if err != nil {
		return id
	}
	return u.String()
}

// accountOrNil keeps a row insertable when the account id is unknown (a message that
// failed because its account does not exist).
func accountOrNil(id string) string {
	if u, err := uuid.Parse(id); err == nil {
		return u.String()
	}
	return uuid.Nil.String()
}

func validID(id string) error {
	if _, err := uuid.Parse(id); err != nil {
		return fmt.Errorf("%w: %q", ErrInvalidID, truncate(id, 64))
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// BatcherOptions tune a Batcher.
type BatcherOptions struct {
	// MaxBatch is the most rows of one kind in one round trip (default 500).
	MaxBatch int
	// MaxDelay is how long the first request of a batch waits for company (default 5ms:
	// a batch of 10 rows costs Postgres about twice the CPU per row of a batch of 50).
	MaxDelay time.Duration
	// Flushers is how many batches may be in flight to Postgres at once (default 4).
	Flushers int
	// Lease is the batcher's claims' holder and lifetime (default: a new holder,
	// DefaultLeaseTTL).
	Lease Lease
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Batcher gathers the claims and outcomes of many concurrent sends into few round trips
// (up to MaxBatch rows or MaxDelay, whichever comes first), so Postgres is not the
// bottleneck at thousands of messages a second. Each call still returns its own result.
//
// Calls append to a pending list under a mutex and wake the collector only when the list
// was empty or is full, so a request costs no goroutine switch on its way into a batch
// (a channel per request woke the collector for every one of them). The list needs no
// bound of its own: every request has a caller waiting for it, and the sender bounds its
// callers (MaxInFlight per partition).
type Batcher struct {
	repo *Repository
	opts BatcherOptions
	log  *slog.Logger

	mu      sync.Mutex
	pending []request
	closed  bool
	wake    chan struct{} // 1-buffered: the list got its first request, filled up or closed

	batches chan []request
	wg      sync.WaitGroup
}

type requestKind int

const (
	kindClaim requestKind = iota
	kindSent
	kindFailed
	kindPark
	kindUnpark
)

type request struct {
	kind    requestKind
	id      string // canonical
	claim   Claim
	sent    Sent
	failure Failure
	park    Park
	unpark  ParkedKey
	result  chan response // buffered, 1
}

type response struct {
	claim ClaimResult
	park  ParkResult
	err   error
}

// results recycles the answer channels of requests whose caller took the answer (a
// caller that gave up leaves its channel to the batch, which may still answer it).
var results = sync.Pool{New: func() any { return make(chan response, 1) }}

// NewBatcher starts a batcher over r. Close stops it.
func (r *Repository) NewBatcher(opts BatcherOptions) *Batcher {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 500
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = 5 * time.Millisecond
	}
	if opts.Flushers <= 0 {
		opts.Flushers = 4
	}
	if opts.Lease.Holder == "" {
		opts.Lease.Holder = NewHolder()
	}
	if opts.Lease.TTL <= 0 {
		opts.Lease.TTL = DefaultLeaseTTL
	}
	b := &Batcher{
		repo:    r,
		opts:    opts,
		log:     opts.Logger,
		wake:    make(chan struct{}, 1),
		batches: make(chan []request, opts.Flushers),
	}
	if b.log == nil {
		b.log = slog.Default()
	}
	b.wg.Add(1 + opts.Flushers)
	go b.collect()
	for range opts.Flushers {
		go b.flushLoop()
	}
	return b
}

// Claim claims one message (see Repository.ClaimMany).
func (b *Batcher) Claim(ctx context.Context, c Claim) (ClaimResult, error) {
	if err := validID(c.ID); err != nil {
		return ClaimResult{}, err
	}
	resp, err := b.do(ctx, request{kind: kindClaim, id: canonicalID(c.ID), claim: c})
	return resp.claim, err
}

// MarkSent records a successful send (see Repository.MarkSentMany).
func (b *Batcher) MarkSent(ctx context.Context, s Sent) error {
	if err := validID(s.ID); err != nil {
		return err
	}
	_, err := b.do(ctx, request{kind: kindSent, id: canonicalID(s.ID), sent: s})
	return err
}

// MarkFailed records a message that failed for good (see Repository.MarkFailedMany).
func (b *Batcher) MarkFailed(ctx context.Context, f Failure) error {
	if err := validID(f.ID); err != nil {
		return err
	}
	_, err := b.do(ctx, request{kind: kindFailed, id: canonicalID(f.ID), failure: f})
	return err
}

func (b *Batcher) do(ctx context.Context, req request) (response, error) {
	if err := ctx.Err(); err != nil {
		return response{}, err
	}
	req.result = results.Get().(chan response)
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		results.Put(req.result)
		return response{}, ErrBatcherClosed
	}
	b.pending = append(b.pending, req)
	n := len(b.pending)
	b.mu.Unlock()
	if n == 1 || n == b.opts.MaxBatch {
		b.signal()
	}
	select {
	case resp := <-req.result:
		results.Put(req.result)
		return resp, resp.err
	case <-ctx.Done():
		// The write may still happen; the caller treats the outcome as unknown.
		return response{}, ctx.Err()
	}
}

func (b *Batcher) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// Close flushes what is queued and stops the batcher. Calls after Close fail with
// ErrBatcherClosed.
func (b *Batcher) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	b.mu.Unlock()
	b.signal()
	b.wg.Wait()
}

// collect forms batches: from the first pending request it waits MaxDelay for company
// (less if MaxBatch requests are pending first), then takes up to MaxBatch of them. The
// same id twice in one batch stays pending for the next one (one statement cannot
// update a row twice).
func (b *Batcher) collect() {
	defer b.wg.Done()
	defer close(b.batches)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		b.mu.Lock()
		n, closed := len(b.pending), b.closed
		b.mu.Unlock()
		if n == 0 {
			if closed {
				return
			}
			<-b.wake
			continue
		}
		if n < b.opts.MaxBatch && !closed {
			timer.Reset(b.opts.MaxDelay)
		linger:
			for {
				select {
				case <-timer.C:
					break linger
				case <-b.wake:
					b.mu.Lock()
					full := len(b.pending) >= b.opts.MaxBatch || b.closed
					b.mu.Unlock()
					if full {
						timer.Stop()
						break linger
					}
				}
			}
		}
		b.batches <- b.take()
	}
}

// take removes the next batch from the pending list: up to MaxBatch requests with
// distinct ids, in arrival order.
func (b *Batcher) take() []request {
	b.mu.Lock()
	defer b.mu.Unlock()
	batch := make([]request, 0, min(len(b.pending), b.opts.MaxBatch))
	seen := make(map[string]struct{}, cap(batch))
	rest := b.pending[:0]
	for _, r := range b.pending {
		if _, twice := seen[r.id]; twice || len(batch) == b.opts.MaxBatch {
			rest = append(rest, r)
			continue
		}
		seen[r.id] = struct{}{}
		batch = append(batch, r)
	}
	clear(b.pending[len(rest):])
	b.pending = rest
	return batch
}

func (b *Batcher) flushLoop() {
	defer b.wg.Done()
	for batch := range b.batches {
		b.flush(batch)
	}
}

// flush writes a batch in one round trip. If it fails (a row Postgres refuses would
// otherwise fail every message that shared its batch), each request is retried on its
// own so that only the bad one gets the error.
func (b *Batcher) flush(batch []request) {
	// Parks are written in a transaction of their own (see write): split them off, so
	// that each part is answered once, whatever happens to the other.
	var parks, rest []request
	for _, r := range batch {
		if r.kind == kindPark {
			parks = append(parks, r)
		} else {
			rest = append(rest, r)
		}
	}
	if len(parks) > 0 && len(rest) > 0 {
		b.flushPart(parks)
		b.flushPart(rest)
		return
	}
	b.flushPart(batch)
}

func (b *Batcher) flushPart(batch []request) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := b.write(ctx, batch)
	if err == nil || len(batch) == 1 {
		if err != nil {
			batch[0].result <- response{err: err}
		}
		return
	}
	b.log.Warn("message batch failed, writing its rows one by one", "rows", len(batch), "err", err)
	for _, req := range batch {
		if err := b.write(ctx, []request{req}); err != nil {
			req.result <- response{err: err}
		}
	}
}

// write runs batch's statements in one pipeline and answers every request on success.
func (b *Batcher) write(ctx context.Context, batch []request) error {
	var claims []Claim
	var claimReqs []request
	var sent []Sent
	var failed []Failure
	var parks []Park
	var parkReqs []request
	var unparks []ParkedKey
	for _, r := range batch {
		switch r.kind {
		case kindPark:
			parks = append(parks, r.park)
			parkReqs = append(parkReqs, r)
		case kindUnpark:
			unparks = append(unparks, r.unpark)
		case kindClaim:
			claims = append(claims, r.claim)
			claimReqs = append(claimReqs, r)
		case kindSent:
			sent = append(sent, r.sent)
		case kindFailed:
			failed = append(failed, r.failure)
		}
	}
	holder, ttl, err := b.opts.Lease.args()
	if err != nil {
		return err
	}
	pb := &pgx.Batch{}
	claimRes := make([]ClaimResult, len(claims))
	queueClaims(pb, claims, claimRes, holder, ttl)
	if len(sent) > 0 {
		pb.Queue(markSentSQL, sentColumns(sent)...)
	}
	if len(failed) > 0 {
		pb.Queue(markFailedSQL, failedColumns(failed)...)
	}
	if len(unparks) > 0 {
		queueUnparks(pb, unparks)
	}
	// A pipeline is one implicit transaction. Every statement takes its message rows'
	// locks in id order, but two statements of one transaction take two rounds of
	// them, which can deadlock with the gateway's accepted insert of the same rows:
	// parks (a parked row and its queued status, written together or not at all) come
	// right after their accept, so flush gives them a write, and a transaction, of
	// their own.
	parkRes := make([]ParkResult, len(parks))
	queueParks(pb, parks, parkRes)
	if err := b.repo.pool.SendBatch(ctx, pb).Close(); err != nil {
		return fmt.Errorf("writing %d claims, %d sent, %d failed, %d parked, %d unparked: %w",
			len(claims), len(sent), len(failed), len(parks), len(unparks), err)
	}
	if err := b.repo.readHeld(ctx, claims, claimRes); err != nil {
		return err
	}
	for i, r := range claimReqs {
		r.result <- response{claim: claimRes[i]}
	}
	for i, r := range parkReqs {
		r.result <- response{park: parkRes[i]}
	}
	for _, r := range batch {
		if r.kind != kindClaim && r.kind != kindPark {
			r.result <- response{}
		}
	}
	return nil
}
