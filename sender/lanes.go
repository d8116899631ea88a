package sender

import (
	"slices"
	"sync"
	"time"
)

// recipientKey names an ordered stream of sends: one recipient of one phone number of one
// tenant. Sends with the same key go out strictly in the order they were accepted; sends
// with different keys run in parallel.
type recipientKey struct {
	TenantID      string
	PhoneNumberID string
	To            string
}

// lanes runs jobs one key at a time, in the order they were enqueued, and different keys
// concurrently. A key's lane exists only while it has work, so memory follows what is in
// flight (bounded by the partitions' MaxInFlight), not how many recipients ever appeared.
//
// A lane runs on a worker goroutine that, once its lane is empty, waits up to
// laneWorkerIdle for another lane before it exits. A goroutine per lane was started for
// nearly every message (recipients rarely have two queued) and grew its stack from the
// minimum through the Graph call each time: copying stacks cost more than the lanes'
// own work. Idle workers are bounded by the lanes that ran at once in the last
// laneWorkerIdle.
type lanes[K comparable, J any] struct {
	run func(J)

	mu     sync.Mutex
	active map[K]*lane[J]
	// idle hands a new lane to a waiting worker (unbuffered: only a worker blocked on it
	// takes one; otherwise enqueue starts a worker).
	idle chan laneStart[K, J]
}

type lane[J any] struct {
	queue []J
}

type laneStart[K comparable, J any] struct {
	key K
	ln  *lane[J]
}

// laneWorkerIdle is how long a worker without a lane waits for one before it exits.
const laneWorkerIdle = 2 * time.Second

func newLanes[K comparable, J any](run func(J)) *lanes[K, J] {
	return &lanes[K, J]{run: run, active: make(map[K]*lane[J]), idle: make(chan laneStart[K, J])}
}

// enqueue appends j to key's lane, starting the lane if it was idle.
func (l *lanes[K, J]) enqueue(key K, j J) {
	l.mu.Lock()
	ln, ok := l.active[key]
	if ok {
		ln.queue = append(ln.queue, j)
		l.mu.Unlock()
		return
	}
	ln = &lane[J]{queue: []J{j}}
	l.active[key] = ln
	l.mu.Unlock()
	start := laneStart[K, J]{key, ln}
	select {
	case l.idle <- start:
	default:
		go l.worker(start)
	}
}

// worker runs lanes until none comes for laneWorkerIdle.
func (l *lanes[K, J]) worker(start laneStart[K, J]) {
	timer := time.NewTimer(laneWorkerIdle)
	defer timer.Stop()
	for {
		l.drain(start.key, start.ln)
		timer.Reset(laneWorkerIdle)
		select {
		case start = <-l.idle:
		case <-timer.C:
			return
		}
	}
}

func (l *lanes[K, J]) drain(key K, ln *lane[J]) {
	var zero J
	for {
		l.mu.Lock()
		if len(ln.queue) == 0 {
			delete(l.active, key)
			l.mu.Unlock()
			return
		}
		j := ln.queue[0]
		ln.queue[0] = zero
		ln.queue = ln.queue[1:]
		l.mu.Unlock()
		l.run(j)
	}
}

// size returns how many keys have work.
func (l *lanes[K, J]) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.active)
}

// parkedSet remembers, per recipient, the messages handed to wa.sends.retry whose copy
// has not yet reached the head of its lane, by origin: the offset the message had in its
// wa.sends partition. All of a recipient's messages come from one wa.sends partition (it
// is keyed by tenant), so origins order them as they were accepted, and the retry
// topic carries each copy's origin in a header.
//
// The rule (Sender.handle): a message may go ahead only while no earlier message of its
// recipient (smaller origin) is parked; otherwise it follows them into the retry topic.
// Copies in the retry topic need not be in order among themselves: an earlier copy that
// comes back later simply makes the later ones bounce again until it is through.
//
// An entry lives until its copy reaches the head of its lane, not merely until the retry
// consumer reads it: a message queued in the lane ahead of the copy must still see it.
// It is rebuilt at the start of every consumer-group generation from the retry
// partitions' uncommitted backlog, so the rule survives restarts and rebalances.
type parkedSet struct {
	mu sync.Mutex
	m  map[recipientKey][]int64 // origins, sorted, one per parked copy
}

func newParkedSet() *parkedSet { return &parkedSet{m: make(map[recipientKey][]int64)} }

// add records one more parked copy with that origin.
func (p *parkedSet) add(key recipientKey, origin int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.m[key]
	i, _ := slices.BinarySearch(s, origin)
	p.m[key] = slices.Insert(s, i, origin)
}

// remove forgets one parked copy with that origin; removing what is not there does
// nothing.
func (p *parkedSet) remove(key recipientKey, origin int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.m[key]
	i, ok := slices.BinarySearch(s, origin)
	if !ok {
		return
	}
	s = slices.Delete(s, i, i+1)
	if len(s) == 0 {
		delete(p.m, key)
		return
	}
	p.m[key] = s
}

// hasBefore reports whether key has a parked copy of a message earlier than origin.
func (p *parkedSet) hasBefore(key recipientKey, origin int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.m[key]
	return len(s) > 0 && s[0] < origin
}

func (p *parkedSet) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.m)
}

func (p *parkedSet) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.m)
}
