package sender

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/aerostic/aerogate/internal/message"
	"github.com/aerostic/aerogate/internal/queue"
)

// ErrPartitionMismatch means wa.sends and wa.sends.retry have different partition
// counts, which breaks the order of a recipient's sends across the retry topic.
var ErrPartitionMismatch = errors.New("wa.sends and wa.sends.retry differ in partition count")

// partition is the sender's view of one assigned partition of a generation.
type partition struct {
	*queue.Partition
	retry bool
	// ctx ends with the generation (revocation, shutdown): waits are abandoned and
	// nothing new starts.
	ctx context.Context
}

// finish settles a job: its offset becomes committable if it finished; an abandoned
// offset is never committed past (it is redelivered).
func (p *partition) finish(offset int64, finished bool) {
	if finished {
		p.Done(offset)
	} else {
		p.Abandon(offset)
	}
}

// generation is what the partitions of one consumer-group generation share.
type generation struct {
	// ready: retry partition → closed once its backlog is scanned.
	ready map[int]chan struct{}
	// queues: wa.sends partition → the drains of the numbers parked from it.
	queues map[int]*partQueues
}

// Run consumes until ctx is cancelled, then stops fetching, lets the Graph calls in
// flight finish and be recorded, abandons what is waiting (it is redelivered), commits
// what is finished, leaves the group and returns nil. It may be called once. It refuses
// to start when wa.sends and wa.sends.retry differ in partition count.
func (s *Sender) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("sender: Run called twice")
	}
	if err := s.checkPartitions(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	o := s.opts
	var err error
	if s.retryPub, err = queue.NewProducer(queue.ProducerConfig{Cluster: o.Kafka, Topic: queue.TopicSendsRetry,
		Timeout: o.ProduceTimeout, Balancer: &samePartition{}}); err != nil {
		return fmt.Errorf("sender: %w", err)
	}
	if s.dlqPub, err = queue.NewProducer(queue.ProducerConfig{Cluster: o.Kafka, Topic: queue.TopicSendsDLQ,
		Timeout: o.ProduceTimeout}); err != nil {
		return fmt.Errorf("sender: %w", err)
	}
	s.batcher = o.Messages.NewBatcher(message.BatcherOptions{MaxBatch: o.DBBatchMax, MaxDelay: o.DBBatchDelay, Logger: s.log,
		Lease: message.Lease{Holder: s.holder, TTL: o.ClaimLease}})
	defer func() {
		// After the consumer: in-flight sends record their outcomes through these.
		s.batcher.Close()
		_ = s.retryPub.Close()
		_ = s.dlqPub.Close()
	}()

	s.log.Info("sender started", "group", s.cfg.GroupID, "max_in_flight", s.cfg.MaxInFlight)
	rctx, stopReport := context.WithCancel(context.Background())
	defer stopReport()
	go s.reportOldest(rctx)
	if err := s.consumer.Run(ctx); err != nil {
		return fmt.Errorf("sender: %w", err)
	}
	s.log.Info("sender stopped", "stats", s.Stats())
	return nil
}

// checkPartitions refuses partition counts that would break recipient order across the
// retry topic (see the package doc).
func (s *Sender) checkPartitions(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	counts, err := s.opts.Kafka.PartitionCounts(ctx, queue.TopicSends, queue.TopicSendsRetry)
	if err != nil {
		return fmt.Errorf("sender: %w", err)
	}
	if sends, retries := counts[queue.TopicSends], counts[queue.TopicSendsRetry]; sends != retries {
		return fmt.Errorf("sender: %w: %s has %d partitions, %s has %d; give them the same count",
			ErrPartitionMismatch, queue.TopicSends, sends, queue.TopicSendsRetry, retries)
	}
	return nil
}

// assigned starts a generation: whatever the last one knew about the retry topic is
// rebuilt by the scans of its retry partitions.
func (s *Sender) assigned(_ int32, assigned map[string][]int) {
	s.parked.reset()
	g := &generation{ready: map[int]chan struct{}{}, queues: map[int]*partQueues{}}
	for _, id := range assigned[queue.TopicSendsRetry] {
		g.ready[id] = make(chan struct{})
	}
	for _, id := range assigned[queue.TopicSends] {
		g.queues[id] = s.newPartQueues(id)
	}
	s.gen.Store(g)
}

// openPartition returns the handler of a newly assigned partition. A retry partition
// first scans its backlog into the parked set; a wa.sends partition first waits for the
// scan of the retry partition of the same index, if this member owns it: messages of
// recipients parked there must follow them.
func (s *Sender) openPartition(qp *queue.Partition) queue.PartitionHandler {
	p := &partition{Partition: qp, retry: qp.Topic == queue.TopicSendsRetry, ctx: qp.Context()}
	g := s.gen.Load()
	if !p.retry {
		if ch, ok := g.ready[p.ID]; ok {
			select {
			case <-ch:
			case <-p.ctx.Done():
			}
		}
		// The numbers with sends parked from this partition drain from now on, and their
		// new sends queue behind what is parked.
		q := g.queues[p.ID]
		q.load(p.ctx)
		return sendsPartition{s, p, q}
	}
	s.scanParked(p)
	close(g.ready[p.ID])
	h := &retryPartition{s: s, p: p, q: g.queues[p.ID], dq: newDelayQueue[recipientKey, *job]()}
	h.releaser.Add(1)
	go func() {
		defer h.releaser.Done()
		s.releaseDue(p, h.dq)
	}()
	return h
}

func (s *Sender) newJob(p *partition, m kafka.Message, q *partQueues) *job {
	env, bad := decodeSend(m.Value)
	return &job{part: p, offset: m.Offset, env: env, bad: bad, key: keyOf(env), origin: originOf(m, p.retry), queues: q}
}

// sendsPartition puts each wa.sends message in its recipient's lane.
type sendsPartition struct {
	s *Sender
	p *partition
	q *partQueues
}

func (h sendsPartition) Handle(m kafka.Message) {
	j := h.s.newJob(h.p, m, h.q)
	h.s.lanes.enqueue(j.key, j)
}

// Close stops the partition's drains and waits for the sends they released to settle,
// so the next owner's drains start only after these stopped (one drain per number).
// The lanes finish or abandon every job they hold.
func (h sendsPartition) Close() { h.q.close() }

// retryPartition holds each wa.sends.retry message until its not_before, then puts it in
// its recipient's lane.
type retryPartition struct {
	s        *Sender
	p        *partition
	q        *partQueues // of the wa.sends partition with the same index, if owned
	dq       *delayQueue[recipientKey, *job]
	releaser sync.WaitGroup
}

func (h *retryPartition) Handle(m kafka.Message) {
	j := h.s.newJob(h.p, m, h.q)
	nb := time.Now()
	if j.env.NotBefore != nil {
		nb = *j.env.NotBefore
	}
	h.dq.push(j.key, nb, j)
}

// Close abandons what is still waiting for its time: the next owner reads it again.
func (h *retryPartition) Close() {
	h.releaser.Wait()
	for _, j := range h.dq.drain() {
		h.p.finish(j.offset, false)
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
func (s *Sender) scanParked(p *partition) {
	parked := 0
	read, err := p.Backlog(func(m kafka.Message) {
		if env, bad := decodeSend(m.Value); bad == nil {
			if origin := originOf(m, true); origin >= 0 {
				s.parked.add(keyOf(env), origin)
				parked++
			}
		}
	})
	log := s.log.With("topic", p.Topic, "partition", p.ID)
	if err != nil {
		if p.ctx.Err() == nil {
			log.Warn("scanning retry partition backlog; recipient order across the retry topic is not guaranteed for the rest of it",
				"read", read, "parked", parked, "err", err)
		}
		return
	}
	if read > 0 {
		log.Debug("retry backlog scanned", "read", read, "parked", parked)
	}
}
