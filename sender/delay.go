package sender

import (
	"container/heap"
	"sync"
	"time"
)

// delayQueue holds messages read from wa.sends.retry until their not_before time, so
// that one message waiting a minute does not hold up the ones behind it that are due
// sooner (the partition keeps fetching, up to its MaxInFlight).
//
// Per key (recipient) it keeps the read order: an item is never due before an earlier
// item of the same key, and items due at the same time come out in push order.
type delayQueue[K comparable, T any] struct {
	mu    sync.Mutex
	items delayHeap[K, T]
	seq   uint64
	last  map[K]keyDue
	wake  chan struct{}
}

type keyDue struct {
	due time.Time
	n   int
}

type delayItem[K comparable, T any] struct {
	due  time.Time
	seq  uint64
	key  K
	item T
}

func newDelayQueue[K comparable, T any]() *delayQueue[K, T] {
	return &delayQueue[K, T]{last: make(map[K]keyDue), wake: make(chan struct{}, 1)}
}

// push holds item until notBefore, or later if an earlier item of key is due later, and
// returns when it will be due.
func (q *delayQueue[K, T]) push(key K, notBefore time.Time, item T) time.Time {
	q.mu.Lock()
	kd := q.last[key]
	due := notBefore
	if kd.n > 0 && kd.due.After(due) {
		due = kd.due
	}
	q.last[key] = keyDue{due: due, n: kd.n + 1}
	q.seq++
	heap.Push(&q.items, &delayItem[K, T]{due: due, seq: q.seq, key: key, item: item})
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return due
}

// release is called with q.mu held.
func (q *delayQueue[K, T]) release(key K) {
	kd := q.last[key]
	kd.n--
	if kd.n <= 0 {
		delete(q.last, key)
		return
	}
	q.last[key] = kd
}

// popDue removes and returns, in order, the items due at now.
func (q *delayQueue[K, T]) popDue(now time.Time) []T {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []T
	for len(q.items) > 0 && !q.items[0].due.After(now) {
		it := heap.Pop(&q.items).(*delayItem[K, T])
		q.release(it.key)
		out = append(out, it.item)
	}
	return out
}

// next returns when the earliest item is due.
func (q *delayQueue[K, T]) next() (time.Time, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return time.Time{}, false
	}
	return q.items[0].due, true
}

// drain removes and returns everything held, in order.
func (q *delayQueue[K, T]) drain() []T {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []T
	for len(q.items) > 0 {
		it := heap.Pop(&q.items).(*delayItem[K, T])
		q.release(it.key)
		out = append(out, it.item)
	}
	return out
}

type delayHeap[K comparable, T any] []*delayItem[K, T]

func (h delayHeap[K, T]) Len() int { return len(h) }
func (h delayHeap[K, T]) Less(i, j int) bool {
	if h[i].due.Equal(h[j].due) {
		return h[i].seq < h[j].seq
	}
	return h[i].due.Before(h[j].due)
}
func (h delayHeap[K, T]) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *delayHeap[K, T]) Push(x any)   { *h = append(*h, x.(*delayItem[K, T])) }
func (h *delayHeap[K, T]) Pop() any {
	old := *h
	n := len(old)
	it := old[n-1]
	old[n-1] = nil
	*h = old[:n-1]
	return it
}
