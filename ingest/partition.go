package ingest

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/metrics"
	"github.com/aerostic/aerogate/internal/queue"
	"github.com/aerostic/aerogate/internal/retry"
	"github.com/aerostic/aerogate/internal/webhook"
)

// writeTimeout bounds one batch's transaction; a batch in flight when the partition is
// revoked still gets this long to commit.
const writeTimeout = 30 * time.Second

// partition takes one assigned partition's records into batches: Handle queues them,
// one writer goroutine stores a batch at a time, in offset order, and settles it.
type partition struct {
	in *Ingester
	p  *queue.Partition

	mu      sync.Mutex
	pending []kafka.Message
	wake    chan struct{}
	done    chan struct{}
}

func (in *Ingester) openPartition(qp *queue.Partition) queue.PartitionHandler {
	h := &partition{in: in, p: qp, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go h.writer()
	return h
}

// Handle queues a record for the writer.
func (h *partition) Handle(m kafka.Message) {
	h.mu.Lock()
	h.pending = append(h.pending, m)
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// Close waits for the writer: it finishes the batch it is storing and abandons the rest.
func (h *partition) Close() { <-h.done }

func (h *partition) take(n int) []kafka.Message {
	h.mu.Lock()
	defer h.mu.Unlock()
	k := min(n, len(h.pending))
	batch := append([]kafka.Message(nil), h.pending[:k]...)
	h.pending = append(h.pending[:0], h.pending[k:]...)
	return batch
}

func (h *partition) writer() {
	defer close(h.done)
	ctx := h.p.Context()
	for {
		batch := h.take(h.in.cfg.BatchMax)
		if len(batch) == 0 {
			select {
			case <-h.wake:
				continue
			case <-ctx.Done():
			}
			// The fetch loop stopped before Close: whatever it queued since is abandoned.
			for _, m := range h.take(int(^uint(0) >> 1)) {
				h.p.Abandon(m.Offset)
			}
			return
		}
		if ctx.Err() != nil {
			for _, m := range batch {
				h.p.Abandon(m.Offset)
			}
			continue
		}
		h.in.handleBatch(h.p, batch)
	}
}

// handleBatch stores a batch and settles every record of it: Done once its items are
// stored and its dead letters acknowledged, Abandon when the partition ends first.
func (in *Ingester) handleBatch(p *queue.Partition, batch []kafka.Message) {
	ctx := p.Context()
	var ws []*work
	var dead []kafka.Message
	count := func(kind, result string) { metrics.IngestItems.WithLabelValues(kind, result).Inc() }
	for _, m := range batch {
		b := &body{partition: m.Partition, offset: m.Offset, receivedAt: receivedAt(m), raw: m.Value}
		err := webhook.Walk(m.Value, func(it *webhook.Item) {
			switch it.Kind {
			case webhook.KindMessage, webhook.KindStatus:
				ws = append(ws, &work{body: b, item: *it})
			case webhook.KindQuality:
				if it.Event != ThroughputUpgrade {
					in.stats.ignored.Add(1)
					count(it.Kind.String(), ResultIgnored)
					return
				}
				ws = append(ws, &work{body: b, item: *it})
			case webhook.KindOther:
				in.stats.ignored.Add(1)
				count(it.Kind.String(), ResultIgnored)
			default:
				dead = append(dead, deadLetterItem(b, it, ReasonInvalidItem, it.Reason))
				in.stats.deadLettered.Add(1)
				count(it.Kind.String(), ResultDeadLettered)
			}
		})
		if err != nil {
			dead = append(dead, deadLetterBody(b, strings.TrimPrefix(err.Error(), webhook.ErrUnparsable.Error()+": ")))
			in.stats.deadLettered.Add(1)
			count("body", ResultDeadLettered)
		}
	}

	// Place every message and status with its tenant; Postgres being down is retried,
	// an unknown number is dead-lettered.
	var known []*work
	for attempt := 1; ; attempt++ {
		var err error
		known, err = in.resolve(ctx, ws)
		if err == nil {
			break
		}
		if !in.wait(ctx, attempt, "resolving accounts", err) {
			abandon(p, batch)
			return
		}
	}
	for _, w := range ws {
		if w.result == ResultDeadLettered {
			in.stats.deadLettered.Add(1)
			count(w.item.Kind.String(), ResultDeadLettered)
			dead = append(dead, deadLetterItem(w.body, &w.item, ReasonUnknownNumber, "no connected account has phone number id "+w.item.PhoneNumberID))
		}
	}

	for attempt := 1; ; attempt++ {
		refused, err := in.storeAll(known)
		if err == nil {
			dead = append(dead, refused...)
			break
		}
		if !in.wait(ctx, attempt, "storing webhook items", err) {
			abandon(p, batch)
			return
		}
	}
	for _, w := range known {
		count(w.item.Kind.String(), w.result)
		switch w.result {
		case ResultStored:
			in.stats.stored.Add(1)
		case ResultDuplicate:
			in.stats.duplicates.Add(1)
		case ResultPending:
			in.stats.pending.Add(1)
		case ResultDeadLettered:
			in.stats.deadLettered.Add(1)
		}
	}
	if len(known) > 0 {
		in.relay.Kick()
	}

	for attempt := 1; len(dead) > 0; attempt++ {
		wctx, cancel := context.WithTimeout(ctx, in.opts.ProduceTimeout)
		err := in.dlq.WriteMessages(wctx, dead...)
		cancel()
		if err == nil {
			break
		}
		if !in.wait(ctx, attempt, "writing wa.webhooks.dlq", err) {
			abandon(p, batch)
			return
		}
	}
	for _, m := range batch {
		p.Done(m.Offset)
	}
	in.stats.bodies.Add(int64(len(batch)))
}

// wait logs a failed attempt and backs off; false when the partition ended meanwhile.
func (in *Ingester) wait(ctx context.Context, attempt int, what string, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	in.log.Warn(what+"; trying again", "attempt", attempt, "error", err.Error())
	return retry.Sleep(ctx, retry.Backoff(attempt, 100*time.Millisecond, 5*time.Second, nil))
}

func abandon(p *queue.Partition, batch []kafka.Message) {
	for _, m := range batch {
		p.Abandon(m.Offset)
	}
}

// resolve finds each message's and status's tenant by its phone number id (quality
// updates are matched by WABA in Postgres). Items of unknown numbers get
// ResultDeadLettered; the rest are returned.
func (in *Ingester) resolve(ctx context.Context, ws []*work) ([]*work, error) {
	known := make([]*work, 0, len(ws))
	for _, w := range ws {
		w.result = ""
		if w.item.Kind == webhook.KindQuality {
			known = append(known, w)
			continue
		}
		a, err := in.opts.Accounts.ResolveNumber(ctx, w.item.PhoneNumberID)
		if errors.Is(err, account.ErrNotFound) {
			w.result = ResultDeadLettered
			continue
		}
		if err != nil {
			return nil, err
		}
		w.tenantID, w.accountID = a.TenantID, a.ID
		known = append(known, w)
	}
	return known, nil
}

// storeAll stores the batch in one transaction; if Postgres refuses a value, it stores
// the items one by one and dead-letters only those refused. Quality updates that match no
// account are dead-lettered. It returns the dead letters of the items it did not store.
func (in *Ingester) storeAll(ws []*work) (dead []kafka.Message, _ error) {
	if len(ws) == 0 {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	err := storeBatch(ctx, in.opts.Pool, ws)
	if err != nil && !isDataError(err) {
		return nil, err
	}
	if err != nil {
		in.log.Warn("postgres refused a webhook batch; storing its items one by one", "items", len(ws), "error", err.Error())
		for _, w := range ws {
			err := storeBatch(ctx, in.opts.Pool, []*work{w})
			switch {
			case err == nil:
			case isDataError(err):
				w.result = ResultDeadLettered
				dead = append(dead, deadLetterItem(w.body, &w.item, ReasonRejected, err.Error()))
			default:
				return nil, err
			}
		}
	}
	for _, w := range ws {
		if w.item.Kind == webhook.KindQuality && w.result == ResultDeadLettered {
			dead = append(dead, deadLetterItem(w.body, &w.item, ReasonUnknownNumber,
				"no connected account of WABA "+w.item.WABAID+" has display number "+w.item.DisplayPhoneNumber))
		}
	}
	return dead, nil
}

// receivedAt reads the edge's receive time from the record, or its log time.
func receivedAt(m kafka.Message) time.Time {
	for _, h := range m.Headers {
		if h.Key == webhook.HeaderReceivedAt {
			if t, err := time.Parse(time.RFC3339Nano, string(h.Value)); err == nil {
				return t
			}
		}
	}
	if !m.Time.IsZero() {
		return m.Time
	}
	return time.Now()
}
