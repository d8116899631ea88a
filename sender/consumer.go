package sender

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/aerostic/aerogate/internal/message"
	"github.com/aerostic/aerogate/internal/queue"
	"github.com/aerostic/aerogate/internal/retry"
)

// partition is one assigned partition of one generation.
type partition struct {
	topic string
	id    int
	retry bool
	start int64 // where the group's committed offset says to begin
	// ctx ends with the generation (revocation, shutdown): waits are abandoned and
	// nothing new starts.
	ctx     context.Context
	tracker offsetTracker
	slots   chan struct{} // one per fetched, unfinished message: MaxInFlight back-pressure
	jobs    sync.WaitGroup
}

// finish settles a job: its offset becomes committable if it finished, and its slot
// frees either way (an abandoned offset is never committed past: it is redelivered).
func (p *partition) finish(offset int64, finished bool) {
	if finished {
		p.tracker.markDone(offset)
	}
	<-p.slots
	p.jobs.Done()
}

// Run consumes until ctx is cancelled, then stops fetching, lets the Graph calls in
// flight finish and be recorded, abandons what is waiting (it is redelivered), commits
// what is finished, leaves the group and returns nil. It may be called once.
//
// Why a kafka.ConsumerGroup with a fetch loop per partition rather than one
// kafka.Reader: a group Reader is one stream over all its partitions, so a partition
// whose messages wait (a paused tenant, a long retry) would stall the others, and commits
// could not be kept per partition below the first unfinished offset with clean
// revocation. Generation.Start gives each partition its own loop bound to the
// generation, and a final commit on revocation before the partitions move.
func (s *Sender) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("sender: Run called twice")
	}
	o := s.opts
	wc := func(topic string) queue.WriterConfig {
		return queue.WriterConfig{Brokers: o.Brokers, Topic: topic, BatchTimeout: o.ProduceBatchTimeout,
			WriteTimeout: o.ProduceTimeout, ClientID: o.ClientID, Logger: s.log}
	}
	s.retryPub = queue.NewPublisher(wc(queue.TopicSendsRetry))
	s.retryPub.Writer().Balancer = &samePartition{}
	s.dlqPub = queue.NewPublisher(wc(queue.TopicSendsDLQ))
	s.batcher = o.Messages.NewBatcher(message.BatcherOptions{MaxBatch: o.DBBatchMax, MaxDelay: o.DBBatchDelay, Logger: s.log,
		Lease: message.Lease{Holder: s.holder, TTL: o.ClaimLease}})
	defer func() {
		// After the consumer: in-flight sends record their outcomes through these.
		s.batcher.Close()
		_ = s.retryPub.Close()
		_ = s.dlqPub.Close()
	}()

	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:      s.cfg.GroupID,
		Brokers: o.Brokers,
		Dialer:  s.dialer(),
		Topics:  []string{queue.TopicSends, queue.TopicSendsRetry},
		// Range gives partition p of both topics to the same member (same partition
		// counts), which keeps a tenant's retries with its sends: see the package doc.
		GroupBalancers:         []kafka.GroupBalancer{kafka.RangeGroupBalancer{}},
		HeartbeatInterval:      o.HeartbeatInterval,
		SessionTimeout:         o.SessionTimeout,
		RebalanceTimeout:       o.RebalanceTimeout,
		JoinGroupBackoff:       500 * time.Millisecond,
		WatchPartitionChanges:  true,
		PartitionWatchInterval: 10 * time.Second,
		StartOffset:            kafka.FirstOffset,
		Logger:                 kafkaLogger(s.log, slog.LevelDebug, "consumer group"),
		ErrorLogger:            kafkaLogger(s.log, slog.LevelWarn, "consumer group"),
	})
	if err != nil {
		return fmt.Errorf("sender: consumer group: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = cg.Close() })
	defer stop()
	s.log.Info("sender started", "group", s.cfg.GroupID, "max_in_flight", s.cfg.MaxInFlight)
	for {
		gen, err := cg.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, kafka.ErrGroupClosed) {
				break
			}
			s.log.Warn("joining consumer group", "group", s.cfg.GroupID, "err", err)
			continue
		}
		s.startGeneration(gen)
	}
	// Close ends the generation and waits for its partitions to drain and commit.
	_ = cg.Close()
	s.log.Info("sender stopped", "stats", s.Stats())
	return nil
}

func (s *Sender) dialer() *kafka.Dialer {
	return &kafka.Dialer{ClientID: s.opts.ClientID, Timeout: queue.DefaultDialTimeout, DualStack: true}
}

// startGeneration runs every assigned partition and the committer under gen.
func (s *Sender) startGeneration(gen *kafka.Generation) {
	// Whatever the last generation knew about the retry topic is rebuilt by the scans.
	s.parked.reset()
	var parts []*partition
	ready := map[int]chan struct{}{} // retry partition → closed once its backlog is scanned
	var sends, retries []int
	for topic, assigned := range gen.Assignments {
		for _, a := range assigned {
			p := &partition{topic: topic, id: a.ID, retry: topic == queue.TopicSendsRetry, start: a.Offset,
				slots: make(chan struct{}, s.cfg.MaxInFlight)}
			parts = append(parts, p)
			if p.retry {
				ready[p.id] = make(chan struct{})
				retries = append(retries, p.id)
			} else {
				sends = append(sends, p.id)
			}
		}
	}
	slices.Sort(sends)
	slices.Sort(retries)
	s.log.Info("partitions assigned", "generation", gen.ID, "sends", sends, "retry", retries)

	var runners sync.WaitGroup
	runners.Add(len(parts))
	for _, p := range parts {
		gen.Start(func(ctx context.Context) {
			defer runners.Done()
			p.ctx = ctx
			s.runPartition(p, ready)
		})
	}
	gen.Start(func(ctx context.Context) { s.commitLoop(ctx, gen, parts, &runners) })
}

// commitLoop commits every partition's finished prefix each CommitInterval, and a last
// time after all partitions stopped when the generation ends (revocation or shutdown),
// while the generation is still valid for the coordinator.
func (s *Sender) commitLoop(ctx context.Context, gen *kafka.Generation, parts []*partition, runners *sync.WaitGroup) {
	last := make(map[*partition]int64, len(parts))
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
			if offsets[p.topic] == nil {
				offsets[p.topic] = map[int]int64{}
			}
			offsets[p.topic][p.id] = next
			advance += next - last[p]
		}
		if len(offsets) == 0 {
			return
		}
		if err := gen.CommitOffsets(offsets); err != nil {
			s.log.Warn("committing offsets", "generation", gen.ID, "err", err)
			return
		}
		for _, p := range parts {
			if off, ok := offsets[p.topic][p.id]; ok {
				last[p] = off
			}
		}
		s.stats.committed.Add(advance)
	}
	t := time.NewTicker(s.opts.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			runners.Wait()
			commit()
			return
		case <-t.C:
			commit()
		}
	}
}

// runPartition fetches p until its generation ends, then waits for its jobs.
func (s *Sender) runPartition(p *partition, ready map[int]chan struct{}) {
	log := s.log.With("topic", p.topic, "partition", p.id)
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:          s.opts.Brokers,
		Topic:            p.topic,
		Partition:        p.id,
		Dialer:           s.dialer(),
		QueueCapacity:    min(s.cfg.MaxInFlight, 1000),
		MinBytes:         1,
		MaxBytes:         10 << 20,
		MaxWait:          s.opts.FetchMaxWait,
		ReadBatchTimeout: s.opts.FetchMaxWait + 5*time.Second,
		ReadLagInterval:  -1,
		ReadBackoffMin:   10 * time.Millisecond,
		ReadBackoffMax:   500 * time.Millisecond,
		MaxAttempts:      3,
		Logger:           kafkaLogger(log, slog.LevelDebug, "reader"),
		ErrorLogger:      kafkaLogger(log, slog.LevelWarn, "reader"),
	})
	defer r.Close()

	if p.retry {
		s.scanParked(p, r, log)
		close(ready[p.id])
	} else if ch, ok := ready[p.id]; ok {
		// Messages of recipients parked in retry partition p must follow them there:
		// wait until that partition's backlog is known.
		select {
		case <-ch:
		case <-p.ctx.Done():
			return
		}
	}
	if err := r.SetOffset(p.start); err != nil {
		log.Error("seeking", "offset", p.start, "err", err)
		<-p.ctx.Done()
		return
	}

	var dq *delayQueue[recipientKey, *job]
	var releaser sync.WaitGroup
	if p.retry {
		dq = newDelayQueue[recipientKey, *job]()
		releaser.Add(1)
		go func() {
			defer releaser.Done()
			s.releaseDue(p, dq)
		}()
	}

	for {
		select {
		case p.slots <- struct{}{}:
		case <-p.ctx.Done():
		}
		if p.ctx.Err() != nil {
			break
		}
		m, err := r.FetchMessage(p.ctx)
		if err != nil {
			<-p.slots
			if p.ctx.Err() != nil {
				break
			}
			log.Warn("fetching", "err", err)
			retry.Sleep(p.ctx, 500*time.Millisecond)
			continue
		}
		p.tracker.add(m.Offset)
		p.jobs.Add(1)
		env, bad := decodeSend(m.Value)
		j := &job{part: p, offset: m.Offset, env: env, bad: bad, key: keyOf(env), origin: originOf(m, p.retry)}
		if !p.retry {
			s.lanes.enqueue(j.key, j)
			continue
		}
		nb := time.Now()
		if env.NotBefore != nil {
			nb = *env.NotBefore
		}
		dq.push(j.key, nb, j)
	}

	if dq != nil {
		releaser.Wait()
		for _, j := range dq.drain() {
			p.finish(j.offset, false)
		}
	}
	p.jobs.Wait()
	if next, ok := p.tracker.committable(); ok {
		log.Debug("partition stopped", "committable", next, "unfinished", p.tracker.inFlight())
	}
}

// releaseDue dispatches retry messages as they come due, in due order (and per
// recipient in read order), until the generation ends.
func (s *Sender) releaseDue(p *partition, dq *delayQueue[recipientKey, *job]) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		for _, j := range dq.popDue(time.Now()) {
			s.lanes.enqueue(j.key, j)
		}
		wait := time.Hour
		if next, ok := dq.next(); ok {
			wait = max(time.Until(next), 0)
		}
		timer.Reset(wait)
		select {
		case <-p.ctx.Done():
			return
		case <-dq.wake:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// scanParked reads retry partition p's backlog (from the committed offset to the end
// as it is now) and records every message in it as parked, so that wa.sends messages of
// those recipients follow them rather than overtake them after a restart or rebalance.
func (s *Sender) scanParked(p *partition, r *kafka.Reader, log *slog.Logger) {
	first, last, err := s.partitionBounds(p.ctx, p.topic, p.id)
	if err != nil {
		if p.ctx.Err() == nil {
			log.Warn("reading retry partition bounds; recipient order across the retry topic is not guaranteed for its backlog", "err", err)
		}
		return
	}
	start := p.start
	if start < first {
		start = first // FirstOffset, or committed below what retention kept
	}
	if start >= last {
		return
	}
	if err := r.SetOffset(start); err != nil {
		log.Warn("seeking retry partition backlog", "err", err)
		return
	}
	n := 0
	for {
		// A backlog whose last offsets cannot be read (deleted meanwhile) must not hold
		// the wa.sends partition back for ever.
		ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
		m, err := r.FetchMessage(ctx)
		cancel()
		if err != nil {
			if p.ctx.Err() == nil {
				log.Warn("scanning retry partition backlog; recipient order across the retry topic is not guaranteed for the rest of it",
					"parked", n, "err", err)
			}
			return
		}
		if env, bad := decodeSend(m.Value); bad == nil {
			if origin := originOf(m, true); origin >= 0 {
				s.parked.add(keyOf(env), origin)
				n++
			}
		}
		if m.Offset >= last-1 {
			break
		}
	}
	log.Debug("retry backlog scanned", "from", start, "to", last, "parked", n)
}

// partitionBounds returns the first and the next-to-be-written offsets of a partition.
func (s *Sender) partitionBounds(ctx context.Context, topic string, partition int) (first, last int64, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var errs []error
	for _, b := range s.opts.Brokers {
		conn, err := s.dialer().DialLeader(ctx, "tcp", b, topic, partition)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if dl, ok := ctx.Deadline(); ok {
			_ = conn.SetDeadline(dl)
		}
		first, last, err = conn.ReadOffsets()
		_ = conn.Close()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		return first, last, nil
	}
	return 0, 0, fmt.Errorf("reading offsets of %s/%d: %w", topic, partition, errors.Join(errs...))
}
