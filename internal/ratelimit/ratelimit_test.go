package ratelimit

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/aerostic/aerogate/internal/metrics"
)

func TestLocalBucket(t *testing.T) {
	l, err := New(Config{
		Default:   Limits{API: Limit{RPS: 10, Burst: 5}, Send: Limit{RPS: 1, Burst: 1}},
		Overrides: map[string]Limits{"big": {API: Limit{RPS: 100, Burst: 50}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 5 {
		if d := l.Allow(ctx, API, "acme"); !d.Allowed || d.Remaining != 4-i {
			t.Fatalf("request %d: %+v", i, d)
		}
	}
	d := l.Allow(ctx, API, "acme")
	if d.Allowed || d.RetryAfter <= 0 || d.RetryAfter > 100*time.Millisecond || d.Limit != (Limit{10, 5}) {
		t.Fatalf("over the burst: %+v", d)
	}
	// Another tenant and another class have their own buckets.
	if d := l.Allow(ctx, API, "other"); !d.Allowed {
		t.Fatalf("other tenant: %+v", d)
	}
	if d := l.Allow(ctx, Send, "acme"); !d.Allowed {
		t.Fatalf("send class: %+v", d)
	}
	if d := l.Allow(ctx, Send, "acme"); d.Allowed {
		t.Fatalf("second send within 1s: %+v", d)
	}
	// The override's burst, and its unlimited send class.
	for i := range 50 {
		if d := l.Allow(ctx, API, "big"); !d.Allowed {
			t.Fatalf("override request %d refused", i)
		}
	}
	for range 10 {
		if d := l.Allow(ctx, Send, "big"); !d.Allowed {
			t.Fatal("an override without a send rate is unlimited")
		}
	}
	// Refill: after 100ms one more request.
	time.Sleep(120 * time.Millisecond)
	if d := l.Allow(ctx, API, "acme"); !d.Allowed {
		t.Fatalf("after refill: %+v", d)
	}
}

func TestLocalBucketsAreBounded(t *testing.T) {
	b := newBuckets(128)
	for i := range 10_000 {
		b.allow(strconv.Itoa(i), Limit{RPS: 1, Burst: 1}, time.Now())
	}
	n := 0
	for i := range b.shards {
		n += len(b.shards[i].m)
	}
	if n > 128 {
		t.Fatalf("%d buckets kept, bound 128", n)
	}
	// The most recent tenant is kept, drained.
	if d := b.allow("9999", Limit{RPS: 1, Burst: 1}, time.Now()); d.Allowed {
		t.Fatal("the most recently used bucket was dropped")
	}
}

func TestConfigRefused(t *testing.T) {
	for _, c := range []Config{
		{Default: Limits{API: Limit{RPS: -1}}},
		{Default: Limits{API: Limit{RPS: 1, Burst: 0}}},
		{Overrides: map[string]Limits{"t": {Send: Limit{RPS: 5}}}},
		{RedisURL: "http://nope"},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

func TestRejectionLabelsAreBounded(t *testing.T) {
	l, _ := New(Config{Default: Limits{API: Limit{RPS: 1, Burst: 1}}})
	ctx := context.Background()
	before := testutil.CollectAndCount(metrics.RateLimitRejections)
	for i := range 300 {
		tenant := fmt.Sprintf("bounded-%d", i)
		l.Allow(ctx, API, tenant)
		l.Allow(ctx, API, tenant)
	}
	if n := testutil.CollectAndCount(metrics.RateLimitRejections) - before; n > maxLabelledTenants+1 {
		t.Fatalf("%d series", n)
	}
	if v := testutil.ToFloat64(metrics.RateLimitRejections.WithLabelValues("api", "_other")); v < 200 {
		t.Fatalf("_other counted %v", v)
	}
}

func redisURL(t *testing.T) string {
	t.Helper()
	addr := os.Getenv("AEROGATE_TEST_REDIS")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Skipf("no Redis at %s: %v", addr, err)
	}
	c.Close()
	return "redis://" + addr + "/0"
}

// TestRedisHoldsTheLimitAcrossInstances: two limiters (two gateway instances) hitting
// one tenant as fast as they can for 2s are together held to its rate, ±10%.
func TestRedisHoldsTheLimitAcrossInstances(t *testing.T) {
	url := redisURL(t)
	tenant := fmt.Sprintf("shared-%d", time.Now().UnixNano())
	const rps, burst = 200, 20
	var allowed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	const run = 2 * time.Second
	for range 2 {
		l, err := New(Config{Default: Limits{API: Limit{RPS: rps, Burst: burst}}, RedisURL: url, RedisTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Since(start) < run {
					d := l.Allow(context.Background(), API, tenant)
					if d.Local {
						t.Error("decided locally")
						return
					}
					if d.Allowed {
						allowed.Add(1)
					}
				}
			}()
		}
	}
	wg.Wait()
	want := burst + rps*time.Since(start).Seconds()
	got := float64(allowed.Load())
	t.Logf("allowed %v in %v, limit %v", got, time.Since(start), want)
	if got < want*0.9 || got > want*1.1 {
		t.Fatalf("allowed %v, want %v ±10%%", got, want)
	}
}

// TestRedisDownFallsBackToLocal: with Redis unreachable the limiter keeps deciding, on
// local buckets, and the metric says so; when Redis answers again it is used again.
func TestRedisDownFallsBackToLocal(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	l, err := New(Config{Default: Limits{API: Limit{RPS: 1, Burst: 2}}, RedisURL: "redis://" + addr, RetryRedisAfter: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	before := testutil.ToFloat64(metrics.RateLimitLocalFallbacks)
	d1, d2, d3 := l.Allow(ctx, API, "acme"), l.Allow(ctx, API, "acme"), l.Allow(ctx, API, "acme")
	if !d1.Allowed || !d2.Allowed || d3.Allowed || !d3.Local {
		t.Fatalf("local decisions: %+v %+v %+v", d1, d2, d3)
	}
	if got := testutil.ToFloat64(metrics.RateLimitRedisUp.WithLabelValues()); got != 0 {
		t.Fatalf("redis_up = %v while down", got)
	}
	if got := testutil.ToFloat64(metrics.RateLimitLocalFallbacks) - before; got != 3 {
		t.Fatalf("fallbacks counted %v", got)
	}

	// Redis comes back on that address.
	real := redisURL(t)
	opts, _ := redis.ParseURL(real)
	proxy, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot take the address back: %v", err)
	}
	defer proxy.Close()
	go func() {
		for {
			c, err := proxy.Accept()
			if err != nil {
				return
			}
			r, err := net.Dial("tcp", opts.Addr)
			if err != nil {
				c.Close()
				continue
			}
			go func() { defer c.Close(); defer r.Close(); copyConn(r, c) }()
			go func() { copyConn(c, r) }()
		}
	}()
	time.Sleep(60 * time.Millisecond)
	if d := l.Allow(ctx, API, fmt.Sprintf("back-%d", time.Now().UnixNano())); !d.Allowed || d.Local {
		t.Fatalf("after redis came back: %+v", d)
	}
	if got := testutil.ToFloat64(metrics.RateLimitRedisUp.WithLabelValues()); got != 1 {
		t.Fatalf("redis_up = %v after it answered", got)
	}
}

func copyConn(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
