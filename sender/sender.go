// Package sender drains wa.sends (and wa.sends.retry) to the Graph API with each tenant's
// own token: per-partition scheduling with many sends in flight but every recipient's
// sends strictly in order, per-number rate limits, retries by Meta error code, a
// dead-letter topic, and a Postgres claim before every Graph call so that a redelivered
// message is not sent twice.
//
// # Pipeline
//
// queue.Consumer owns the consumer group: every assigned partition of both topics runs its
// own fetch loop, so one slow partition never holds up another, and offsets are committed
// only up to the first one that is not finished. Fetched messages go into per-recipient
// lanes (tenant + phone number id + to): a lane runs its sends one after the other,
// different lanes run at once, and a partition has at most MaxInFlight messages fetched
// but unfinished, so a slow partition applies back-pressure instead of buffering.
//
// Per message: resolve the account (never a token from the envelope), queue it if it
// cannot go soon (below), take the number's token, claim the row in Postgres, call Graph
// (paced once more, see calls), record the outcome. A message is finished when it is
// sent, skipped (already final), failed for good into wa.sends.dlq, handed to
// wa.sends.retry with the write acknowledged, or written to its number's queue; only then
// may its offset be committed.
//
// # Fair sending: a per-number queue off the partition's path
//
// Sends are keyed by tenant, so many tenants share a partition and its MaxInFlight
// window. A send that must wait for its number would hold a slot that other tenants'
// sends need: a campaign of thousands on an 80 mps number would fill the window and hold
// the partition for minutes. So a send waits in the partition only while its number's
// bucket frees a token within ParkAfter (250 ms). Otherwise — and when its account
// cannot send (token expired or refused with 190, needs reconnecting) or its number is
// paused — it is parked: written to its number's queue in Postgres (message.Park: a row
// of parked_sends keyed by partition, phone number id and seq, the send's offset in its
// wa.sends partition, so a number's rows are in order of arrival and a send parked twice
// after a redelivery lands on its own row; urgent sends have priority 0). Parks from many
// lanes share multi-row inserts (message.Batcher), the message moves to queued with an
// expected send time in the same transaction, and the send's offset is committed only
// after that write. Once a number has anything parked, or a park in flight, its new
// sends park behind it, whatever the bucket says: that is what keeps a recipient's later
// messages behind its parked earlier ones (the simple, safe rule: per number rather than
// per recipient).
//
// # Who drains a number: the owner of the tenant's partition
//
// A number's sends all arrive on one wa.sends partition (its tenant's), so the instance
// the consumer group gives that partition runs the number's drain (drain.go), as it
// already paces the number's bucket in memory. No lease in Postgres is needed, and none
// could be cheaper: the group already makes one instance the owner, and a rebalance ends
// the old owner's generation — its drains stopped and their Graph calls finished
// (sendsPartition.Close waits for them) — before the new owner's partitions start and
// read their queues (partQueues.load, before the partition's first message). One drain
// per number at a time follows, across instances and rebalances. A crashed owner's
// sends in flight are covered by their claims' leases as for any send. (A number moved
// to another tenant in another partition would have a queue per partition: not
// supported.)
//
// A drain releases its number's rows in order at the number's rate: it reads a page of
// about a quarter second of sends (urgent rows first, then the others, each by seq),
// takes the number's token for each and hands it to its recipient's lane, so the send
// goes the same way as any (claim, call, record); a finished send's row is deleted
// (a crash before the delete releases it again, and its claim skips it). Rules that keep
// the order: a released send whose account turns out stopped or paused stays in its row
// and halts the drain (the sends released after it stay too) until every release has
// settled and the account can send; a send parked below what the drain already read (one
// back from the retry topic) starts a new epoch: the older releases not yet started stay
// in their rows, and the drain reads again from the top once they settled. An urgent
// send whose recipient already has sends parked is parked behind them, not urgent
// (message.parkSQL). The Graph calls are paced again right before the call (calls):
// batched claims make released sends reach Graph in clumps, and the second bucket keeps
// every second within the number's rate plus its 1/50 s burst. Admission's buckets are
// deeper (1/10 s) so that a drain held up for a moment catches up rather than losing
// pace; every new bucket starts empty, so a hand-over admits nothing early.
//
// A stopped account's drain waits for the account-change notification every instance
// receives (account.Resolver.Watch, fed by LISTEN/NOTIFY), checking again every
// paused_retry_delay in case one was missed; a paused number's until the pause ends.
// Nothing cycles through wa.sends.retry meanwhile. wa.sends.retry is left to Graph
// errors retried later than InProcessRetryMax, and to sends whose wa.sends partition
// this instance does not own.
//
// # Exactly one Graph call per message, and the window where it is two
//
// The claim moves a message to sending only while it is unknown or accepted, or sending
// under a claim that is this sender's own or has lapsed: a redelivered message that is
// already sent (or failed) is skipped, and one another live sender holds is waited for
// (the claim is exclusive: a holder id per process and a lease, ClaimLease). Within a
// process, two copies of one message id never run at once, whatever their recipient
// lanes (inFlight). The one window left: a message claimed sending whose Graph call was
// in flight, or answered but not yet recorded as sent, when the process died is claimed
// again once its lease lapsed, and sent again. That is at most the Graph calls in
// flight at the moment of the crash: at most MaxInFlight per partition the process
// owned plus, per number it was draining, the drain's window of released sends
// (twice the number's rate, at most 1000), and in practice the calls of the lanes that
// were at their Graph step. A call that
// times out without an answer is retried too (Meta may have taken it): that is Meta's
// at-least-once, not the sender's.
//
// # Order across the retry topic
//
// wa.sends.retry is consumed by the same group, and partition p of both topics goes to
// the same instance (range assignor, same partition counts, and the sender writes a
// retry to the partition index it was read from). Every retry copy carries its origin,
// the offset the message had in wa.sends, in a header; all of a recipient's messages
// come from one wa.sends partition, so origins are the recipient's order. A message may
// go ahead only while no earlier message of its recipient is parked in the retry topic;
// otherwise it follows them there (parkedSet). The retry consumer holds each copy until
// its not_before without blocking the partition (delayQueue). The parked set is rebuilt
// at the start of every generation from the retry partitions' uncommitted backlog, so
// the rule survives restarts and rebalances. It does not hold if wa.sends and
// wa.sends.retry have different partition counts or wa.sends is repartitioned.
//
// # Memory
//
// Per partition: at most MaxInFlight fetched-but-unfinished messages (the fetch loop
// blocks on a slot), plus kafka-go's prefetch queue (min(MaxInFlight, 1000) messages,
// one fetch of at most 10 MiB). Lanes, the parked set and the delay queue hold only
// those messages, and the drains' released sends. Per number with a queue: its drain's
// state and at most its window of released sends and one page read (whatever the
// backlog in Postgres: the drain reads pages). The drain states of a partition's numbers
// are kept until the partition moves (one small struct per number that was ever
// parked in this generation).
package sender

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/graph"
	"github.com/aerostic/aerogate/internal/message"
	"github.com/aerostic/aerogate/internal/queue"
)

// Options configure a Sender. Brokers, Accounts, AccountRepo, Messages and Graph are
// required; zero durations and sizes take the defaults noted.
type Options struct {
	// Kafka is how to reach the brokers (queue.NewCluster); its ClientID defaults to
	// "aerogate-sender".
	Kafka queue.Cluster
	// Config is the sender section of the configuration (group id, in-flight bound,
	// attempts, backoff, waits, default throughput); zero fields take config.Default's.
	Config config.Sender

	Accounts    *account.Resolver
	AccountRepo *account.Repository
	Messages    *message.Repository
	Graph       *graph.Client
	Logger      *slog.Logger

	// Consumer-group timing (defaults: queue.DefaultSession, queue.DefaultRebalance,
	// queue.DefaultHeartbeat). A crashed member's partitions move after SessionTimeout;
	// a rebalance waits up to RebalanceTimeout for members to finish in-flight sends.
	SessionTimeout    time.Duration
	RebalanceTimeout  time.Duration
	HeartbeatInterval time.Duration
	// CommitInterval is how often finished offsets are committed (default 200ms); they
	// are also committed when a partition is revoked and at shutdown.
	CommitInterval time.Duration
	// FetchMaxWait bounds how long a fetch of an idle partition waits for data (default
	// 500ms; see queue.ConsumerConfig).
	FetchMaxWait time.Duration
	// ProduceTimeout bounds one write to the retry or DLQ topic with its retries
	// (default queue.DefaultWriteTimeout); the sender then tries again until the
	// partition goes away.
	ProduceTimeout time.Duration
	// DBBatchMax and DBBatchDelay shape the batching of claims and outcomes (defaults
	// 500 rows, 5ms).
	DBBatchMax   int
	DBBatchDelay time.Duration
	// ParkAfter is the longest a send waits for its number's pace while holding its
	// partition's slot (default 250ms); a send that would wait longer parks in its
	// number's queue in Postgres.
	ParkAfter time.Duration
	// ClaimLease is how long a claim stays this sender's alone (default
	// message.DefaultLeaseTTL; Run uses graph.timeout + 15s): it must outlast a Graph
	// call and the recording of its outcome. Another sender takes a claim over only once
	// it lapsed, so after a crash the messages whose calls were in flight are sent again
	// up to ClaimLease later.
	ClaimLease time.Duration
}

// DefaultParkAfter is Options.ParkAfter's default.
const DefaultParkAfter = 250 * time.Millisecond

// Stats are counters since New, for tests, the bench and logs.
type Stats struct {
	Sent       int64 // Graph accepted the message and it was recorded sent
	Failed     int64 // failed for good: recorded failed and written to the DLQ
	DLQ        int64 // written to wa.sends.dlq (includes malformed envelopes)
	Retried    int64 // retries after a retryable Graph error, in process or through the retry topic
	Parked     int64 // handed to wa.sends.retry, for any reason
	Waiting    int64 // of Parked: the account could not send (token, pause)
	Followed   int64 // of Parked: followed an earlier message of the recipient there
	Skipped    int64 // redelivered messages already final in Postgres
	Held       int64 // claims found held by another live sender (waited for, then looked at again)
	GraphCalls int64
	Committed  int64 // offsets committed (sum of advances)
	Queued     int64 // parked in a number's queue in Postgres (pacing, behind, stopped, paused)
	Drained    int64 // released from a number's queue and finished
}

type counters struct {
	sent, failed, dlq, retried, parked, waiting, followed, skipped, held, graphCalls atomic.Int64
	queued, drained                                                                  atomic.Int64
}

// Sender is the send pipeline. Build it with New and run it once with Run.
type Sender struct {
	opts Options
	cfg  config.Sender
	log  *slog.Logger

	consumer *queue.Consumer
	gen      atomic.Pointer[generation]
	retryPub *queue.Producer
	dlqPub   *queue.Producer
	batcher  *message.Batcher

	// limiters pace admission (a direct send's turn, a drain's releases); calls pace the
	// Graph calls themselves, after the claim, at the same rate: the claims' batching
	// makes released sends reach Graph in clumps, and calls evens them out so that no
	// second sees more than the number's rate plus its small burst.
	limiters *numberLimiters
	calls    *numberLimiters
	lanes    *lanes[recipientKey, *job]
	parked   *parkedSet
	inFlight *inFlight
	holder   string // this sender's claims' holder (message.Lease)
	stats    counters

	seriesMu sync.Mutex
	series   int // numbers with a series of their own in metrics.ParkedMessages

	started atomic.Bool
}

// New checks opts and builds a sender; it does not connect to anything yet.
func New(opts Options) (*Sender, error) {
	switch {
	case len(opts.Kafka.Brokers) == 0:
		return nil, errors.New("sender: no kafka brokers")
	case opts.Accounts == nil || opts.AccountRepo == nil:
		return nil, errors.New("sender: account resolver and repository are required")
	case opts.Messages == nil:
		return nil, errors.New("sender: message repository is required")
	case opts.Graph == nil:
		return nil, errors.New("sender: graph client is required")
	}
	cfg := withSenderDefaults(opts.Config)
	if cfg.RetryMaxDelay < cfg.RetryBaseDelay {
		return nil, fmt.Errorf("sender: retry_max_delay %v is below retry_base_delay %v", cfg.RetryMaxDelay, cfg.RetryBaseDelay)
	}
	if opts.Kafka.ClientID == "" {
		opts.Kafka.ClientID = "aerogate-sender"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ParkAfter <= 0 {
		opts.ParkAfter = DefaultParkAfter
	}
	if opts.ClaimLease <= 0 {
		opts.ClaimLease = message.DefaultLeaseTTL
	}
	s := &Sender{
		opts:     opts,
		cfg:      cfg,
		log:      opts.Logger.With("component", "sender"),
		limiters: newAdmissionLimiters(cfg.DefaultThroughputMPS),
		calls:    newNumberLimiters(cfg.DefaultThroughputMPS),
		parked:   newParkedSet(),
		inFlight: newInFlight(),
		holder:   message.NewHolder(),
	}
	s.lanes = newLanes[recipientKey](s.process)
	var err error
	s.consumer, err = queue.NewConsumer(queue.ConsumerConfig{
		Cluster:           opts.Kafka,
		GroupID:           cfg.GroupID,
		Topics:            []string{queue.TopicSends, queue.TopicSendsRetry},
		Handler:           s.openPartition,
		Assigned:          s.assigned,
		MaxInFlight:       cfg.MaxInFlight,
		SessionTimeout:    opts.SessionTimeout,
		RebalanceTimeout:  opts.RebalanceTimeout,
		HeartbeatInterval: opts.HeartbeatInterval,
		CommitInterval:    opts.CommitInterval,
		FetchMaxWait:      opts.FetchMaxWait,
		Logger:            s.log,
	})
	if err != nil {
		return nil, fmt.Errorf("sender: %w", err)
	}
	return s, nil
}

func withSenderDefaults(c config.Sender) config.Sender {
	d := config.Default().Sender
	if c.GroupID == "" {
		c.GroupID = d.GroupID
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = d.MaxInFlight
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = d.MaxAttempts
	}
	if c.RetryBaseDelay <= 0 {
		c.RetryBaseDelay = d.RetryBaseDelay
	}
	if c.RetryMaxDelay <= 0 {
		c.RetryMaxDelay = d.RetryMaxDelay
	}
	if c.InProcessRetryMax < 0 {
		c.InProcessRetryMax = 0
	}
	if c.PausedRetryDelay <= 0 {
		c.PausedRetryDelay = d.PausedRetryDelay
	}
	if c.DefaultThroughputMPS <= 0 {
		c.DefaultThroughputMPS = d.DefaultThroughputMPS
	}
	if c.DefaultThroughputMPS > MaxThroughputMPS {
		c.DefaultThroughputMPS = MaxThroughputMPS
	}
	return c
}

// Stats returns the counters.
func (s *Sender) Stats() Stats {
	c := &s.stats
	return Stats{
		Sent: c.sent.Load(), Failed: c.failed.Load(), DLQ: c.dlq.Load(), Retried: c.retried.Load(),
		Parked: c.parked.Load(), Waiting: c.waiting.Load(), Followed: c.followed.Load(),
		Skipped: c.skipped.Load(), Held: c.held.Load(), GraphCalls: c.graphCalls.Load(), Committed: s.consumer.Committed(),
		Queued: c.queued.Load(), Drained: c.drained.Load(),
	}
}
