package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/aerostic/aerogate/internal/retry"
)

// Consumer is aerogate's one way to consume Kafka, for every role: it owns the consumer
// group's membership, one fetch loop per assigned partition, back-pressure and commits.
// The role supplies only what to do with a message.
//
// Why a kafka.ConsumerGroup with a fetch loop per partition rather than one group
// kafka.Reader: a group Reader is one stream over all its partitions, so a partition whose
// messages wait (a paused tenant, a long retry) would stall the others, and commits could
// not be kept per partition below the first unfinished offset with clean revocation.
// Generation.Start gives each partition its own loop bound to the generation, and a final
// commit on revocation before the partitions move.
//
// Rules every role gets:
//   - A partition has at most MaxInFlight messages fetched but not settled; past that its
//     fetch loop waits (back-pressure instead of buffering).
//   - A message is settled by Partition.Done (finished: its offset may be committed) or
//     Partition.Abandon (not finished: it is fetched again by the next owner). Messages
//     may settle in any order; an offset is committed only once every message before it
//     in its partition is done, so a crash or a rebalance redelivers everything
//     unfinished and loses nothing.
//   - Finished offsets are committed every CommitInterval, and a last time when the
//     generation ends (revocation or shutdown) after every message of it settled.
//   - A group without committed offsets starts at the first offset.
//   - Partitions are assigned by range, so partition p of topics with the same partition
//     count go to the same member.
type Consumer struct {
	cfg       ConsumerConfig
	log       *slog.Logger
	started   atomic.Bool
	committed atomic.Int64
}

// ConsumerConfig configures a Consumer. Cluster, GroupID, Topics and Handler are required.
type ConsumerConfig struct {
	Cluster Cluster
	GroupID string
	Topics  []string

	// Handler returns the handler of a newly assigned partition. It is called on that
	// partition's own goroutine before its first fetch and may block (until
	// p.Context() ends) or read the partition's backlog (Partition.Backlog). Roles that
	// keep no state per partition use Each. A nil handler leaves the partition unread
	// for this generation.
	Handler func(p *Partition) PartitionHandler
	// Assigned, if set, is called when a generation starts, with what it assigned to
	// this member by topic, before any of its partitions start.
	Assigned func(generation int32, assigned map[string][]int)

	// MaxInFlight bounds a partition's fetched but unsettled messages (default 1000).
	MaxInFlight int
	// SessionTimeout (default 10s) and RebalanceTimeout (default 10s) bound how long
	// partitions of a crashed member stay unassigned and how long a rebalance waits for
	// members to settle their messages. HeartbeatInterval defaults to 1s.
	SessionTimeout    time.Duration
	RebalanceTimeout  time.Duration
	HeartbeatInterval time.Duration
	// CommitInterval is how often finished offsets are committed (default 200ms).
	CommitInterval time.Duration
	// FetchMaxWait bounds how long a fetch of an idle partition waits for data (default
	// 500ms). It costs no latency (a fetch returns as soon as there is a message), but
	// kafka-go gives the broker only 3/4 of it and fails the read at all of it, so a very
	// short wait turns a slow broker reply into a dropped connection.
	FetchMaxWait time.Duration
	// Logger receives the consumer's and kafka-go's logs; nil means slog.Default().
	Logger *slog.Logger
}

// A PartitionHandler takes the messages of one assigned partition for one generation.
type PartitionHandler interface {
	// Handle is called on the partition's fetch goroutine for each message, in offset
	// order. The message must be settled exactly once (Partition.Done or Abandon), at
	// once or later from any goroutine; until then it holds one of the partition's
	// MaxInFlight slots. A Handle that blocks holds the partition's fetching.
	Handle(m kafka.Message)
	// Close is called once the partition stopped fetching (revocation or shutdown:
	// Partition.Context is done). It must see that every message it holds that nothing
	// else will settle is settled; the consumer then waits for all of them and commits.
	Close()
}

// Each returns a Handler calling handle for every message of every partition, for roles
// that keep no state per partition. handle settles each message, for example:
//
//	queue.Each(func(p *queue.Partition, m kafka.Message) { ingest(m); p.Done(m.Offset) })
func Each(handle func(p *Partition, m kafka.Message)) func(*Partition) PartitionHandler {
	return func(p *Partition) PartitionHandler { return eachHandler{p, handle} }
}

type eachHandler struct {
	p      *Partition
	handle func(*Partition, kafka.Message)
}

func (h eachHandler) Handle(m kafka.Message) { h.handle(h.p, m) }
func (eachHandler) Close()                   {}

// Partition is one assigned partition of one generation.
type Partition struct {
	Topic      string
	ID         int
	Generation int32

	ctx     context.Context // ends with the generation
	start   int64           // where the group's committed offset says to begin
	c       *Consumer
	reader  *kafka.Reader
	log     *slog.Logger
	tracker offsetTracker
	slots   chan struct{} // one per fetched, unsettled message
	pending sync.WaitGroup
	metrics consumerMetrics
}

// Context ends when the partition's generation ends (revocation or shutdown): waits
// should be abandoned then and nothing new started.
func (p *Partition) Context() context.Context { return p.ctx }

// Done settles a message as finished: its offset may be committed once every earlier
// one is.
func (p *Partition) Done(offset int64) { p.settle(offset, true) }

// Abandon settles a message as not finished: its offset is never committed past, so
// the partition's next owner fetches it again.
func (p *Partition) Abandon(offset int64) { p.settle(offset, false) }

func (p *Partition) settle(offset int64, finished bool) {
	if finished {
		p.tracker.markDone(offset)
	}
	<-p.slots
	p.pending.Done()
}

// backlogFetchTimeout bounds each read of Backlog: a backlog whose last offsets cannot
// be read (deleted meanwhile) must not hold the partition for ever.
const backlogFetchTimeout = 10 * time.Second

// Backlog reads the partition from the committed offset to its end as it is now and
// calls f with each message, without delivering them: for a Handler that must know
// what is waiting before the first message is handled. It returns how many it read.
func (p *Partition) Backlog(f func(kafka.Message)) (int, error) {
	first, last, err := p.c.cfg.Cluster.partitionBounds(p.ctx, p.Topic, p.ID)
	if err != nil {
		return 0, err
	}
	start := max(p.start, first) // FirstOffset, or committed below what retention kept
	if start >= last {
		return 0, nil
	}
	if err := p.reader.SetOffset(start); err != nil {
		return 0, fmt.Errorf("seeking %s/%d to %d: %w", p.Topic, p.ID, start, err)
	}
	n := 0
	for {
		ctx, cancel := context.WithTimeout(p.ctx, backlogFetchTimeout)
		m, err := p.reader.FetchMessage(ctx)
		cancel()
		if err != nil {
			return n, fmt.Errorf("reading the backlog of %s/%d at %d of %d: %w", p.Topic, p.ID, start+int64(n), last, err)
		}
		n++
		f(m)
		if m.Offset >= last-1 {
			return n, nil
		}
	}
}

// NewConsumer checks cfg; it does not connect yet.
func NewConsumer(cfg ConsumerConfig) (*Consumer, error) {
	switch {
	case len(cfg.Cluster.Brokers) == 0:
		return nil, errors.New("consumer: no kafka brokers")
	case cfg.GroupID == "":
		return nil, errors.New("consumer: no group id")
	case len(cfg.Topics) == 0:
		return nil, errors.New("consumer: no topics")
	case cfg.Handler == nil:
		return nil, errors.New("consumer: no handler")
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 1000
	}
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = DefaultSession
	}
	if cfg.RebalanceTimeout <= 0 {
		cfg.RebalanceTimeout = DefaultRebalance
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = DefaultHeartbeat
	}
	if cfg.CommitInterval <= 0 {
		cfg.CommitInterval = 200 * time.Millisecond
	}
	if cfg.FetchMaxWait <= 0 {
		cfg.FetchMaxWait = 500 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Consumer{cfg: cfg, log: cfg.Logger.With("group", cfg.GroupID)}, nil
}

// Committed is the sum of the offsets' advances committed since NewConsumer.
func (c *Consumer) Committed() int64 { return c.committed.Load() }

// Run consumes until ctx is cancelled, then stops fetching, waits for every fetched
// message to be settled, commits what is finished, leaves the group and returns nil.
// It may be called once.
func (c *Consumer) Run(ctx context.Context) error {
	if !c.started.CompareAndSwap(false, true) {
		return errors.New("consumer: Run called twice")
	}
	cfg := c.cfg
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:      cfg.GroupID,
		Brokers: cfg.Cluster.Brokers,
		Dialer:  cfg.Cluster.Dialer(),
		Topics:  cfg.Topics,
		// Range gives partition p of every topic to the same member (when the partition
		// counts are equal): the sender relies on it to keep a recipient's retries with
		// its sends.
		GroupBalancers:         []kafka.GroupBalancer{kafka.RangeGroupBalancer{}},
		HeartbeatInterval:      cfg.HeartbeatInterval,
		SessionTimeout:         cfg.SessionTimeout,
		RebalanceTimeout:       cfg.RebalanceTimeout,
		JoinGroupBackoff:       500 * time.Millisecond,
		WatchPartitionChanges:  true,
		PartitionWatchInterval: 10 * time.Second,
		StartOffset:            kafka.FirstOffset,
		Logger:                 kafkaLogger(c.log, slog.LevelDebug, "consumer group"),
		ErrorLogger:            kafkaLogger(c.log, slog.LevelWarn, "consumer group"),
	})
	if err != nil {
		return fmt.Errorf("consumer group %s: %w", cfg.GroupID, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = cg.Close() })
	defer stop()
	for {
		gen, err := cg.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, kafka.ErrGroupClosed) {
				break
			}
			c.log.Warn("joining consumer group", "err", err)
			continue
		}
		c.startGeneration(gen)
	}
	// Close ends the generation and waits for its partitions to settle and commit.
	_ = cg.Close()
	return nil
}

// startGeneration runs every assigned partition and the committer under gen.
func (c *Consumer) startGeneration(gen *kafka.Generation) {
	var parts []*Partition
	assigned := make(map[string][]int, len(gen.Assignments))
	for topic, as := range gen.Assignments {
		for _, a := range as {
			parts = append(parts, &Partition{
				Topic: topic, ID: a.ID, Generation: gen.ID, start: a.Offset, c: c,
				log:     c.log.With("topic", topic, "partition", a.ID),
				slots:   make(chan struct{}, c.cfg.MaxInFlight),
				metrics: newConsumerMetrics(c.cfg.GroupID, topic, a.ID),
			})
			assigned[topic] = append(assigned[topic], a.ID)
		}
		slices.Sort(assigned[topic])
	}
	c.log.Info("partitions assigned", "generation", gen.ID, "assigned", assigned)
	if c.cfg.Assigned != nil {
		c.cfg.Assigned(gen.ID, assigned)
	}
	var runners sync.WaitGroup
	runners.Add(len(parts))
	for _, p := range parts {
		gen.Start(func(ctx context.Context) {
			defer runners.Done()
			p.ctx = ctx
			c.runPartition(p)
		})
	}
	gen.Start(func(ctx context.Context) { c.commitLoop(ctx, gen, parts, &runners) })
}

// commitLoop commits every partition's finished prefix each CommitInterval, and a last
// time after all partitions stopped when the generation ends (revocation or shutdown),
// while the generation is still valid for the coordinator.
func (c *Consumer) commitLoop(ctx context.Context, gen *kafka.Generation, parts []*Partition, runners *sync.WaitGroup) {
	last := make(map[*Partition]int64, len(parts))
	for _, p := range parts {
		last[p] = max(p.start, 0) // FirstOffset is negative
	}
	commit := func() {
		offsets := map[string]map[int]int64{}
		var advance int64
		for _, p := range parts {
			next, ok := p.tracker.committable()
			if !ok || next <= last[p] {
				continue
			}
			if offsets[p.Topic] == nil {
				offsets[p.Topic] = map[int]int64{}
			}
			offsets[p.Topic][p.ID] = next
			advance += next - last[p]
		}
		if len(offsets) == 0 {
			return
		}
		if err := gen.CommitOffsets(offsets); err != nil {
			c.log.Warn("committing offsets", "generation", gen.ID, "err", err)
			return
		}
		for _, p := range parts {
			if off, ok := offsets[p.Topic][p.ID]; ok {
				last[p] = off
				p.metrics.commits.Inc()
				p.metrics.committed.Set(float64(off))
			}
		}
		c.committed.Add(advance)
	}
	t := time.NewTicker(c.cfg.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			runners.Wait()
			commit()
			for _, p := range parts {
				p.metrics.release()
			}
			return
		case <-t.C:
			commit()
		}
	}
}

// runPartition fetches p until its generation ends, then waits for its messages to
// settle.
func (c *Consumer) runPartition(p *Partition) {
	p.reader = kafka.NewReader(kafka.ReaderConfig{
		Brokers:          c.cfg.Cluster.Brokers,
		Topic:            p.Topic,
		Partition:        p.ID,
		Dialer:           c.cfg.Cluster.Dialer(),
		QueueCapacity:    min(c.cfg.MaxInFlight, 1000),
		MinBytes:         1,
		MaxBytes:         10 << 20,
		MaxWait:          c.cfg.FetchMaxWait,
		ReadBatchTimeout: c.cfg.FetchMaxWait + 5*time.Second,
		ReadLagInterval:  -1,
		ReadBackoffMin:   10 * time.Millisecond,
		ReadBackoffMax:   500 * time.Millisecond,
		MaxAttempts:      3,
		Logger:           kafkaLogger(p.log, slog.LevelDebug, "reader"),
		ErrorLogger:      kafkaLogger(p.log, slog.LevelWarn, "reader"),
	})
	defer p.reader.Close()

	// A partition's goroutine must not return before its generation ends: kafka-go ends
	// the generation as soon as one of them does.
	h := c.cfg.Handler(p)
	if h == nil {
		<-p.ctx.Done()
		return
	}
	if err := p.reader.SetOffset(p.start); err != nil {
		p.log.Error("seeking", "offset", p.start, "err", err)
		<-p.ctx.Done()
		h.Close()
		return
	}
	for {
		select {
		case p.slots <- struct{}{}:
		case <-p.ctx.Done():
		}
		if p.ctx.Err() != nil {
			break
		}
		m, err := p.reader.FetchMessage(p.ctx)
		if err != nil {
			<-p.slots
			if p.ctx.Err() != nil {
				break
			}
			p.log.Warn("fetching", "err", err)
			retry.Sleep(p.ctx, 500*time.Millisecond)
			continue
		}
		p.tracker.add(m.Offset)
		p.pending.Add(1)
		p.metrics.lag.Set(float64(max(m.HighWaterMark-m.Offset-1, 0)))
		h.Handle(m)
	}
	h.Close()
	p.pending.Wait()
	if next, ok := p.tracker.committable(); ok {
		p.log.Debug("partition stopped", "committable", next, "unfinished", p.tracker.inFlight())
	}
}

// kafkaLogger adapts slog to kafka-go's logger interface at the given level.
func kafkaLogger(l *slog.Logger, level slog.Level, what string) kafka.Logger {
	return kafka.LoggerFunc(func(format string, args ...any) {
		ctx := context.Background()
		if l.Enabled(ctx, level) {
			l.Log(ctx, level, what+": "+fmt.Sprintf(format, args...))
		}
	})
}
