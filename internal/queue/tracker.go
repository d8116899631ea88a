package queue

import (
	"sort"
	"sync"
)

// offsetTracker knows which offsets of one partition are finished and so how far the
// consumer group may commit: only up to the first offset that is still in flight, so a
// crash or a rebalance redelivers everything not finished and nothing is lost.
//
// Offsets are added in increasing order (the order they are fetched in); they need not be
// contiguous (compaction and transaction markers leave gaps). Done may come in any order.
type offsetTracker struct {
	mu sync.Mutex
	// pending holds the added offsets not yet popped, oldest first; done[i] is whether
	// pending[i] is finished. head indexes the first live entry so popping is O(1).
	pending []int64
	done    []bool
	head    int
	// next is the offset to commit: everything before it is finished.
	next int64
	// hasNext reports whether any offset was ever popped (next is meaningful).
	hasNext bool
}

// add records a fetched offset as in flight.
func (t *offsetTracker) add(offset int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pending = append(t.pending, offset)
	t.done = append(t.done, false)
}

// markDone records that offset is finished. Unknown offsets are ignored.
func (t *offsetTracker) markDone(offset int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	live := t.pending[t.head:]
	i := sort.Search(len(live), func(i int) bool { return live[i] >= offset })
	if i == len(live) || live[i] != offset {
		return
	}
	t.done[t.head+i] = true
	for t.head < len(t.pending) && t.done[t.head] {
		t.next = t.pending[t.head] + 1
		t.hasNext = true
		t.head++
	}
	// Compact once the popped prefix dominates, keeping memory bounded by what is live.
	if t.head > 1024 && t.head*2 > len(t.pending) {
		n := copy(t.pending, t.pending[t.head:])
		copy(t.done, t.done[t.head:])
		t.pending = t.pending[:n]
		t.done = t.done[:n]
		t.head = 0
	}
}

// committable returns the offset to commit (the next one to consume) and whether there is
// one at all.
func (t *offsetTracker) committable() (int64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.next, t.hasNext
}

// inFlight returns how many added offsets are not yet committable.
func (t *offsetTracker) inFlight() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pending) - t.head
}
