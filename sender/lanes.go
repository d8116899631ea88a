package sender

import "sync"

// recipientKey names an ordered stream of sends: one recipient of one phone number of one
// tenant. Sends with the same key go out strictly in the order they were accepted; sends
// with different keys run in parallel.
type recipientKey struct {
	TenantID      string
	PhoneNumberID string
	To            string
}

// lanes runs jobs one key at a time, in the order they were enqueued, and different keys
// concurrently. A key's lane goroutine exists only while it has work, so memory follows
// what is in flight (bounded by the partitions' MaxInFlight), not how many recipients
// ever appeared.
type lanes[K comparable, J any] struct {
	run func(J)

	mu     sync.Mutex
	active map[K]*lane[J]
}

type lane[J any] struct {
	queue []J
}

func newLanes[K comparable, J any](run func(J)) *lanes[K, J] {
	return &lanes[K, J]{run: run, active: make(map[K]*lane[J])}
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
	go l.drain(key, ln)
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

// parkedSet remembers, per recipient, the messages handed to wa.sends.retry that the
// retry consumer has not taken back yet. While a recipient has one, its later messages
// follow it into the retry topic instead of overtaking it (see Sender.mustFollow).
//
// Every entry carries the park clock's value when it was added, so a job can tell the
// messages parked before it was dispatched from those parked after (which can only come
// from jobs ahead of it in its lane, so are earlier than it).
//
// It is rebuilt at the start of every consumer-group generation from the retry
// partitions' uncommitted backlog, so the rule survives restarts and rebalances.
type parkedSet struct {
	mu    sync.Mutex
	clock uint64
	m     map[recipientKey]map[string]parkedEntry // by message id
}

type parkedEntry struct {
	copies int    // copies of the message in the retry topic
	seq    uint64 // park clock when the latest copy was added
}

func newParkedSet() *parkedSet {
	return &parkedSet{m: make(map[recipientKey]map[string]parkedEntry)}
}

// add records one more copy of id in the retry topic.
func (p *parkedSet) add(key recipientKey, id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clock++
	ids := p.m[key]
	if ids == nil {
		ids = make(map[string]parkedEntry)
		p.m[key] = ids
	}
	e := ids[id]
	ids[id] = parkedEntry{copies: e.copies + 1, seq: p.clock}
}

// remove forgets one copy of id; removing what is not there does nothing.
func (p *parkedSet) remove(key recipientKey, id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ids := p.m[key]
	e, ok := ids[id]
	if !ok {
		return
	}
	e.copies--
	if e.copies > 0 {
		ids[id] = e
		return
	}
	delete(ids, id)
	if len(ids) == 0 {
		delete(p.m, key)
	}
}

// now returns the park clock: entries added later have a greater seq.
func (p *parkedSet) now() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.clock
}

// has reports whether key has any message in the retry topic.
func (p *parkedSet) has(key recipientKey) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.m[key]) > 0
}

// parkedSince reports whether key has a message parked after clock value seq.
func (p *parkedSet) parkedSince(key recipientKey, seq uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.m[key] {
		if e.seq > seq {
			return true
		}
	}
	return false
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
