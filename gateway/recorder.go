package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/aerostic/aerogate/internal/message"
	"github.com/aerostic/aerogate/internal/whatsapp"
)

// digits holds a recipient inline so handing a record over allocates nothing.
type digits struct {
	n int8
	b [whatsapp.MaxRecipientDigits]byte
}

func newDigits(b []byte) digits {
	var d digits
	d.n = int8(copy(d.b[:], b))
	return d
}

func (d *digits) String() string { return string(d.b[:d.n]) }

// acceptedRecord is an accepted send waiting to be written to messages.
type acceptedRecord struct {
	id        uuid.UUID
	tenantID  string
	accountID string
	phone     string
	recipient digits
	key       string
	at        time.Time
	// unknown: answered 504 (Kafka did not confirm in time): recorded with status
	// unknown, which only a claim or an acknowledged retry moves forward.
	unknown bool
}

// recorder writes accepted messages to Postgres in batches, off the request path: a
// send is already durable in Kafka when it is recorded here, and the sender creates the
// row if this record is lost, so a full buffer drops the record instead of waiting. It
// also records the sends answered 504, as unknown.
type recorder struct {
	// collecting lets one worker at a time gather a batch, so concurrent workers do not
	// split the records between them: one collects while the other inserts.
	collecting sync.Mutex
	linger     time.Duration

	repo   *message.Repository
	log    *slog.Logger
	ch     chan acceptedRecord
	batch  int
	stop   chan struct{}
	done   sync.WaitGroup
	closed atomic.Bool

	dropped atomic.Uint64
	failed  atomic.Uint64
	written atomic.Uint64

	dropLog everySecond
}

// everySecond allows one log line a second: an outage fails thousands of requests a
// second, and one line with a running total says as much.
type everySecond struct{ last atomic.Int64 }

func (e *everySecond) allow() bool {
	now := time.Now().Unix()
	last := e.last.Load()
	return now > last && e.last.CompareAndSwap(last, now)
}

// recordWorkers insert concurrently, so one slow INSERT does not stall the others.
const recordWorkers = 2

// recordLinger is how long a batch waits for more records after its first. Postgres
// spends ~30 µs of CPU per row in batches of 10 and ~17 µs in batches of 1,000
// (measured here), and a GET a few milliseconds later still finds the row.
const recordLinger = 5 * time.Millisecond

func newRecorder(repo *message.Repository, buffer, batch int, log *slog.Logger) *recorder {
	r := &recorder{
		repo:   repo,
		log:    log,
		ch:     make(chan acceptedRecord, buffer),
		batch:  batch,
		stop:   make(chan struct{}),
		linger: recordLinger,
	}
	for range recordWorkers {
		r.done.Add(1)
		go r.run()
	}
	return r
}

// add hands a record over without blocking; a full buffer drops it.
func (r *recorder) add(rec acceptedRecord) {
	if r.closed.Load() {
		r.drop()
		return
	}
	select {
	case r.ch <- rec:
	default:
		r.drop()
	}
}

func (r *recorder) drop() {
	n := r.dropped.Add(1)
	if r.dropLog.allow() {
		r.log.Warn("accepted-message buffer full: record dropped (the sender still creates the row)",
			"dropped_total", n)
	}
}

func (r *recorder) run() {
	defer r.done.Done()
	msgs := make([]message.Message, 0, r.batch)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		r.collecting.Lock()
		var first acceptedRecord
		select {
		case first = <-r.ch:
		case <-r.stop:
			r.collecting.Unlock()
			// Flush what is left, then end.
			for {
				msgs = r.collect(msgs[:0])
				if len(msgs) == 0 {
					return
				}
				r.write(msgs)
			}
		}
		msgs = append(msgs[:0], first.message())
		// Gather more for a moment: batches grow with load, and a quiet gateway still
		// records each send within the linger.
		timer.Reset(r.linger)
	gather:
		for len(msgs) < r.batch {
			select {
			case rec := <-r.ch:
				msgs = append(msgs, rec.message())
			case <-timer.C:
				break gather
			case <-r.stop:
				msgs = r.collect(msgs)
				break gather
			}
		}
		timer.Stop()
		r.collecting.Unlock()
		r.write(msgs)
	}
}

// collect takes what is waiting, without blocking, up to a batch.
func (r *recorder) collect(msgs []message.Message) []message.Message {
	for len(msgs) < r.batch {
		select {
		case rec := <-r.ch:
			msgs = append(msgs, rec.message())
		default:
			return msgs
		}
	}
	return msgs
}

func (r *recorder) write(msgs []message.Message) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.repo.InsertAccepted(ctx, msgs); err != nil {
		r.failed.Add(uint64(len(msgs)))
		r.log.Warn("recording accepted messages failed (the sender still creates the rows)",
			"count", len(msgs), "error", err.Error())
		return
	}
	r.written.Add(uint64(len(msgs)))
}

// close stops the workers after they flushed the buffer, or when ctx ends.
func (r *recorder) close(ctx context.Context) error {
	r.closed.Store(true)
	close(r.stop)
	done := make(chan struct{})
	go func() { r.done.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("flushing accepted messages: %w", ctx.Err())
	}
}

func (rec *acceptedRecord) message() message.Message {
	status := message.StatusAccepted
	if rec.unknown {
		status = message.StatusUnknown
	}
	return message.Message{
		ID:             rec.id.String(),
		TenantID:       rec.tenantID,
		AccountID:      rec.accountID,
		PhoneNumberID:  rec.phone,
		Recipient:      rec.recipient.String(),
		IdempotencyKey: rec.key,
		Status:         status,
		AcceptedAt:     rec.at,
	}
}
