package queue

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

func TestOffsetTrackerCommitsOnlyBelowTheFirstUnfinished(t *testing.T) {
	type step struct {
		add      []int64
		done     []int64
		want     int64
		wantOK   bool
		inFlight int
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"nothing finished", []step{{add: []int64{5, 6, 7}, want: 0, wantOK: false, inFlight: 3}}},
		{"in order", []step{
			{add: []int64{5, 6, 7}, done: []int64{5}, want: 6, wantOK: true, inFlight: 2},
			{done: []int64{6, 7}, want: 8, wantOK: true, inFlight: 0},
		}},
		{"later done first waits for the earlier", []step{
			{add: []int64{0, 1, 2, 3}, done: []int64{3, 1}, want: 0, wantOK: false, inFlight: 4},
			{done: []int64{0}, want: 2, wantOK: true, inFlight: 2},
			{done: []int64{2}, want: 4, wantOK: true, inFlight: 0},
		}},
		{"gaps in offsets", []step{
			{add: []int64{10, 14, 20}, done: []int64{14, 10}, want: 15, wantOK: true, inFlight: 1},
			{add: []int64{21}, done: []int64{21}, want: 15, wantOK: true, inFlight: 2},
			{done: []int64{20}, want: 22, wantOK: true, inFlight: 0},
		}},
		{"unknown and repeated done ignored", []step{
			{add: []int64{1, 2}, done: []int64{9, 2, 2}, want: 0, wantOK: false, inFlight: 2},
			{done: []int64{1, 1}, want: 3, wantOK: true, inFlight: 0},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tr offsetTracker
			for i, s := range tt.steps {
				for _, o := range s.add {
					tr.add(o)
				}
				for _, o := range s.done {
					tr.markDone(o)
				}
				got, ok := tr.committable()
				if got != s.want || ok != s.wantOK {
					t.Fatalf("step %d: committable = %d, %v; want %d, %v", i, got, ok, s.want, s.wantOK)
				}
				if n := tr.inFlight(); n != s.inFlight {
					t.Fatalf("step %d: inFlight = %d, want %d", i, n, s.inFlight)
				}
			}
		})
	}
}

// TestOffsetTrackerRandomOrder finishes offsets in random order from many goroutines and
// checks the committable offset never passes an unfinished one.
func TestOffsetTrackerRandomOrder(t *testing.T) {
	const n = 20000
	var tr offsetTracker
	for i := int64(0); i < n; i++ {
		tr.add(i * 2) // gaps
	}
	order := rand.Perm(n)
	var finished [n]atomic.Bool
	var wg sync.WaitGroup
	chunks := 8
	for c := range chunks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := c; k < n; k += chunks {
				i := order[k]
				finished[i].Store(true)
				tr.markDone(int64(i) * 2)
				if next, ok := tr.committable(); ok {
					// Everything below next must be finished.
					last := int(next-1) / 2
					if !finished[last].Load() {
						t.Errorf("committable %d passes unfinished offset %d", next, last*2)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if next, ok := tr.committable(); !ok || next != (n-1)*2+1 {
		t.Fatalf("final committable = %d, %v; want %d", next, ok, (n-1)*2+1)
	}
	if tr.inFlight() != 0 {
		t.Fatalf("inFlight = %d after all done", tr.inFlight())
	}
}
