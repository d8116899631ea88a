package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"
	produceAPI "github.com/segmentio/kafka-go/protocol/produce"

	"github.com/aerostic/aerogate/internal/retry"
)

// produce writes msgs to the producer's topic in one produce request per partition
// leader (one request in all on a single broker) and retries the partitions that failed
// with a retriable error until the attempts or ctx run out. errs[i] is msgs[i]'s fate;
// nil means every message was acknowledged by all in-sync replicas. A failed message's
// error wraps ErrOutcomeUnknown when any of its attempts may have reached the log (a
// request written and not answered, or answered with an error given after the append),
// else ErrNotWritten.
//
// kafka-go's Writer sends one request per partition and waits out BatchTimeout for each
// batch; a coalesced batch spans every partition, so building the request here turns a
// dozen requests and a timer wait into one round trip.
func (c *Producer) produce(ctx context.Context, msgs []kafka.Message) []error {
	var errs []error
	// maybe[i]: an attempt of msgs[i] may have reached the log (allocated on the first).
	var maybe []bool
	fail := func(idx []int, err error) {
		if len(idx) == 0 {
			return
		}
		if errs == nil {
			errs = make([]error, len(msgs))
		}
		var known, unknown error
		for _, i := range idx {
			if maybe != nil && maybe[i] {
				if unknown == nil {
					unknown = outcomeError(err, true)
				}
				errs[i] = unknown
				continue
			}
			if known == nil {
				known = outcomeError(err, false)
			}
			errs[i] = known
		}
	}
	sent := func(idx []int) {
		if len(idx) == 0 {
			return
		}
		if maybe == nil {
			maybe = make([]bool, len(msgs))
		}
		for _, i := range idx {
			maybe[i] = true
		}
	}
	pending := make([]int, len(msgs))
	for i := range pending {
		pending[i] = i
	}

	// Partitions are chosen once: a retry goes to the same partition, so a key's
	// messages never split between two partitions.
	var part []int32
	for attempt := 1; ; attempt++ {
		layout, err := c.layout(ctx)
		again := pending
		if err == nil {
			if part == nil {
				part = c.partition(msgs, layout.partitions)
			}
			var failed, unsure []int
			again, failed, unsure, err = c.produceOnce(ctx, msgs, pending, part, layout)
			sent(unsure)
			fail(failed, err)
		}
		if len(again) == 0 {
			return errs
		}
		if attempt >= c.attempts || ctx.Err() != nil {
			fail(again, err)
			return errs
		}
		if !retry.Sleep(ctx, retry.Backoff(attempt, c.backoffMin, c.backoffMax, nil)) {
			fail(again, errors.Join(err, ctx.Err()))
			return errs
		}
		pending = again
	}
}

// topicLayout is the producer's topic as the Transport's cached metadata has it.
type topicLayout struct {
	partitions int
	leader     []int32 // by partition
}

// layout reads the topic's partitions and leaders; the Transport answers from its
// metadata cache (refreshed every MetadataTTL), so this costs no round trip.
func (c *Producer) layout(ctx context.Context) (topicLayout, error) {
	r, err := c.transport.RoundTrip(ctx, c.addr, &metadataAPI.Request{TopicNames: []string{c.topic}})
	if err != nil {
		return topicLayout{}, fmt.Errorf("reading metadata of %s: %w", c.topic, err)
	}
	for _, t := range r.(*metadataAPI.Response).Topics {
		if t.Name != c.topic {
			continue
		}
		if t.ErrorCode != 0 {
			return topicLayout{}, fmt.Errorf("reading metadata of %s: %w", c.topic, kafka.Error(t.ErrorCode))
		}
		l := topicLayout{partitions: len(t.Partitions), leader: make([]int32, len(t.Partitions))}
		for _, p := range t.Partitions {
			if int(p.PartitionIndex) >= len(l.leader) || p.PartitionIndex < 0 {
				return topicLayout{}, fmt.Errorf("reading metadata of %s: partition %d of %d", c.topic, p.PartitionIndex, len(t.Partitions))
			}
			l.leader[p.PartitionIndex] = p.LeaderID
		}
		if l.partitions == 0 {
			break
		}
		return l, nil
	}
	return topicLayout{}, fmt.Errorf("reading metadata of %s: %w", c.topic, kafka.UnknownTopicOrPartition)
}

// partition applies the producer's Balancer to every message.
func (c *Producer) partition(msgs []kafka.Message, n int) []int32 {
	partitions := make([]int, n)
	for i := range partitions {
		partitions[i] = i
	}
	part := make([]int32, len(msgs))
	for i := range msgs {
		part[i] = int32(c.balancer.Balance(msgs[i], partitions...))
	}
	return part
}

// produceOnce sends msgs[pending] as one request per leader, concurrently when the
// partitions have several leaders. It returns the messages to try again, those that
// failed for good, those of either kind whose request may have reached the log (see
// mayHaveWritten), and the error behind the failures.
func (c *Producer) produceOnce(ctx context.Context, msgs []kafka.Message, pending []int, part []int32,
	layout topicLayout) (again, failed, unsure []int, err error) {
	// Messages by partition, keeping their order within each.
	byPartition := make(map[int32][]int, layout.partitions)
	for _, i := range pending {
		p := part[i]
		if int(p) >= layout.partitions {
			return nil, pending, nil, fmt.Errorf("partition %d of %s is gone (%d partitions)", p, c.topic, layout.partitions)
		}
		byPartition[p] = append(byPartition[p], i)
	}
	byLeader := map[int32][]int32{}
	for p := range byPartition {
		l := layout.leader[p]
		byLeader[l] = append(byLeader[l], p)
	}

	type outcome struct {
		again, failed, unsure []int
		err                   error
	}
	send := func(parts []int32) outcome {
		var o outcome
		req := &produceAPI.Request{
			Acks:    int16(kafka.RequireAll),
			Timeout: timeoutMs(ctx),
			Topics:  []produceAPI.RequestTopic{{Topic: c.topic, Partitions: make([]produceAPI.RequestPartition, 0, len(parts))}},
		}
		for _, p := range parts {
			req.Topics[0].Partitions = append(req.Topics[0].Partitions, produceAPI.RequestPartition{
				Partition: p,
				RecordSet: protocol.RecordSet{Records: &records{msgs: msgs, idx: byPartition[p]}},
			})
		}
		r, rerr := c.transport.RoundTrip(ctx, c.addr, req)
		if rerr != nil {
			o.err = fmt.Errorf("producing to %s: %w", c.topic, rerr)
			to := &o.failed
			if retriable(rerr) {
				to = &o.again
			}
			for _, p := range parts {
				*to = append(*to, byPartition[p]...)
				if mayHaveWritten(rerr) {
					o.unsure = append(o.unsure, byPartition[p]...)
				}
			}
			return o
		}
		answered := make(map[int32]bool, len(parts))
		for _, t := range r.(*produceAPI.Response).Topics {
			if t.Topic != c.topic {
				continue
			}
			for _, rp := range t.Partitions {
				idx, ok := byPartition[rp.Partition]
				if !ok || answered[rp.Partition] {
					continue
				}
				answered[rp.Partition] = true
				if rp.ErrorCode == 0 {
					continue
				}
				kerr := kafka.Error(rp.ErrorCode)
				o.err = fmt.Errorf("producing to %s partition %d: %w", c.topic, rp.Partition, kerr)
				if appendedCode(kerr) {
					o.unsure = append(o.unsure, idx...)
				}
				if kerr.Temporary() {
					o.again = append(o.again, idx...)
				} else {
					o.failed = append(o.failed, idx...)
				}
			}
		}
		for _, p := range parts {
			if !answered[p] {
				o.err = fmt.Errorf("producing to %s: no answer for partition %d", c.topic, p)
				o.again = append(o.again, byPartition[p]...)
				o.unsure = append(o.unsure, byPartition[p]...)
			}
		}
		return o
	}

	if len(byLeader) == 1 {
		for _, parts := range byLeader {
			o := send(parts)
			return o.again, o.failed, o.unsure, o.err
		}
	}
	results := make(chan outcome, len(byLeader))
	for _, parts := range byLeader {
		go func() { results <- send(parts) }()
	}
	for range byLeader {
		o := <-results
		again = append(again, o.again...)
		failed = append(failed, o.failed...)
		unsure = append(unsure, o.unsure...)
		if o.err != nil {
			err = o.err
		}
	}
	return again, failed, unsure, err
}

// records reads msgs[idx] as a produce request's record set.
type records struct {
	msgs       []kafka.Message
	idx        []int
	next       int
	rec        protocol.Record
	key, value bytesReader
}

func (r *records) ReadRecord() (*protocol.Record, error) {
	if r.next >= len(r.idx) {
		return nil, io.EOF
	}
	m := &r.msgs[r.idx[r.next]]
	r.next++
	r.rec = protocol.Record{Time: m.Time, Headers: m.Headers}
	if m.Key != nil {
		r.key.Reset(m.Key)
		r.rec.Key = &r.key
	}
	if m.Value != nil {
		r.value.Reset(m.Value)
		r.rec.Value = &r.value
	}
	return &r.rec, nil
}

// bytesReader is a protocol.Bytes over a byte slice.
type bytesReader struct{ bytes.Reader }

func (*bytesReader) Close() error { return nil }

// retriable tells a transport error worth another attempt (a broker restarting, a
// leader moving, a dropped connection) from one that will not change.
func retriable(err error) bool {
	var temp interface{ Temporary() bool }
	if errors.As(err, &temp) && temp.Temporary() {
		return true
	}
	var nerr net.Error
	if errors.As(err, &nerr) && nerr.Timeout() {
		return true
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, protocol.ErrNoLeader)
}

// timeoutMs is the broker-side wait for acks: what is left of ctx, capped to int32.
func timeoutMs(ctx context.Context) int32 {
	d := DefaultWriteTimeout
	if dl, ok := ctx.Deadline(); ok {
		d = time.Until(dl)
	}
	return int32(min(max(d.Milliseconds(), 1), 1<<31-1))
}
