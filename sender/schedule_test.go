package sender

import (
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestLanesKeepPerKeyOrderAndRunKeysConcurrently(t *testing.T) {
	type job struct {
		key string
		seq int
	}
	var mu sync.Mutex
	got := map[string][]int{}
	running := map[string]int{}
	var maxParallel, parallel atomic.Int32
	l := newLanes[string, job](func(j job) {
		mu.Lock()
		running[j.key]++
		if running[j.key] > 1 {
			t.Errorf("key %s runs twice at once", j.key)
		}
		mu.Unlock()
		p := parallel.Add(1)
		for {
			m := maxParallel.Load()
			if p <= m || maxParallel.CompareAndSwap(m, p) {
				break
			}
		}
		time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
		parallel.Add(-1)
		mu.Lock()
		running[j.key]--
		got[j.key] = append(got[j.key], j.seq)
		mu.Unlock()
	})
	keys := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	const perKey = 200
	for i := range perKey {
		for _, k := range keys {
			l.enqueue(k, job{k, i})
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for l.size() > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, k := range keys {
		if len(got[k]) != perKey || !slices.IsSorted(got[k]) {
			t.Fatalf("key %s ran %d jobs, sorted=%v", k, len(got[k]), slices.IsSorted(got[k]))
		}
	}
	if maxParallel.Load() < 2 {
		t.Errorf("keys never ran concurrently (max parallel %d)", maxParallel.Load())
	}
}

func TestParkedSetOrdersByOrigin(t *testing.T) {
	p := newParkedSet()
	a := recipientKey{"t1", "p1", "111"}
	b := recipientKey{"t1", "p1", "222"}
	p.add(a, 10)
	p.add(a, 7)
	p.add(a, 7) // a redelivered copy parked twice
	tests := []struct {
		origin int64
		want   bool
	}{{5, false}, {7, false}, {8, true}, {100, true}}
	for _, tt := range tests {
		if got := p.hasBefore(a, tt.origin); got != tt.want {
			t.Errorf("hasBefore(%d) = %v, want %v", tt.origin, got, tt.want)
		}
	}
	if p.hasBefore(b, 100) {
		t.Fatal("another recipient sees a's parks")
	}
	p.remove(b, 7)  // nothing there
	p.remove(a, 99) // nothing there
	p.remove(a, 7)
	if !p.hasBefore(a, 8) {
		t.Fatal("second copy of 7 forgotten")
	}
	p.remove(a, 7)
	if p.hasBefore(a, 8) || !p.hasBefore(a, 11) {
		t.Fatal("wrong after removing both copies of 7")
	}
	p.remove(a, 10)
	if p.size() != 0 {
		t.Fatal("set not empty after every copy removed")
	}
	p.add(b, 1)
	p.reset()
	if p.hasBefore(b, 2) {
		t.Fatal("reset kept entries")
	}
}

func TestDelayQueueOrdersByDueAndKeepsPerKeyOrder(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type in struct {
		key string
		nb  time.Duration
		id  string
	}
	tests := []struct {
		name   string
		pushes []in
		at     time.Duration
		want   []string
	}{
		{"due ones only, by due time", []in{{"a", 3, "a1"}, {"b", 1, "b1"}, {"c", 5, "c1"}}, 3, []string{"b1", "a1"}},
		{"same due keeps push order", []in{{"a", 1, "x"}, {"b", 1, "y"}, {"c", 1, "z"}}, 1, []string{"x", "y", "z"}},
		{"later item of a key waits for the earlier", []in{{"a", 10, "a1"}, {"a", 1, "a2"}, {"b", 1, "b1"}}, 5, []string{"b1"}},
		{"then both, in order", []in{{"a", 10, "a1"}, {"a", 1, "a2"}, {"b", 1, "b1"}}, 10, []string{"b1", "a1", "a2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := newDelayQueue[string, string]()
			for _, p := range tt.pushes {
				q.push(p.key, t0.Add(p.nb*time.Second), p.id)
			}
			got := q.popDue(t0.Add(tt.at * time.Second))
			if !slices.Equal(got, tt.want) {
				t.Fatalf("popDue = %v, want %v", got, tt.want)
			}
		})
	}

	// Once a key's held items are gone, a new item of it is not held back by them.
	q := newDelayQueue[string, string]()
	q.push("a", t0.Add(time.Hour), "old")
	if got := q.drain(); !slices.Equal(got, []string{"old"}) {
		t.Fatalf("drain = %v", got)
	}
	if due := q.push("a", t0, "new"); !due.Equal(t0) {
		t.Fatalf("new item due %v, want %v", due, t0)
	}
	if next, ok := q.next(); !ok || !next.Equal(t0) {
		t.Fatalf("next = %v, %v", next, ok)
	}
}

func TestNumberLimitersFollowTheAccountsThroughput(t *testing.T) {
	l := newNumberLimiters(80)
	tests := []struct {
		number    string
		mps       int
		wantLimit float64
		wantBurst int
	}{
		{"p1", 0, 80, 1},
		{"p1", 150, 150, 3}, // the account's throughput changed
		{"p2", 1000, 1000, 20},
		{"p3", 5000, 1000, 20}, // capped at Meta's maximum
		{"p4", 10, 10, 1},
	}
	for _, tt := range tests {
		lim := l.get(tt.number, tt.mps)
		if float64(lim.Limit()) != tt.wantLimit || lim.Burst() != tt.wantBurst {
			t.Errorf("%s at %d: limit %v burst %d, want %v %d", tt.number, tt.mps, lim.Limit(), lim.Burst(), tt.wantLimit, tt.wantBurst)
		}
	}
	if l.get("p1", 50) != l.get("p1", 50) {
		t.Error("one number got two buckets")
	}
}
