// Package ratelimit holds per-tenant request rates: a token bucket per tenant and class
// (api, send) with a default and per-tenant overrides. By default the buckets live in
// this process (golang.org/x/time/rate, at most MaxTenants of them, least recently used
// dropped first), so each gateway instance enforces the limit on its own. With a Redis
// URL the buckets live in Redis (GCRA, github.com/go-redis/redis_rate), shared by every
// instance; when Redis fails, decisions fall back to the local buckets until it answers
// again, and the metrics and the log say so.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"github.com/aerostic/aerogate/internal/metrics"
)

// Class is what a limit applies to.
type Class uint8

// The classes.
const (
	API  Class = iota // every authenticated request but sends
	Send              // sends: POST /v1/messages and the Cloud API path
	numClasses
)

func (c Class) String() string {
	if c == Send {
		return "send"
	}
	return "api"
}

// Limit is a rate in requests per second and the burst allowed above it. A zero RPS
// means no limit.
type Limit struct {
	RPS   int
	Burst int
}

// Limits are a tenant's limits for each class.
type Limits struct {
	API, Send Limit
}

func (l Limits) of(c Class) Limit {
	if c == Send {
		return l.Send
	}
	return l.API
}

// Config configures a Limiter.
type Config struct {
	Default   Limits
	Overrides map[string]Limits // by tenant id
	// RedisURL, when set, holds the buckets in Redis (redis://[user:password@]host:port/db).
	RedisURL string
	// RedisTimeout bounds one Redis call (default 50ms); past it the decision is local.
	RedisTimeout time.Duration
	// RetryRedisAfter is how long decisions stay local after Redis failed (default 1s).
	RetryRedisAfter time.Duration
	// MaxTenants bounds the local buckets of each class (default 100,000).
	MaxTenants int
	Logger     *slog.Logger
}

// Decision is the answer for one request.
type Decision struct {
	Allowed bool
	Limit   Limit
	// Remaining is how many more requests would be allowed right now.
	Remaining int
	// RetryAfter is how long until one request would be allowed (when refused).
	RetryAfter time.Duration
	// Reset is how long until the bucket is full again.
	Reset time.Duration
	// Local says that Redis is configured but failed, so the local bucket decided.
	Local bool
}

// Limiter decides. It is safe for concurrent use.
type Limiter struct {
	cfg   Config
	log   *slog.Logger
	local [numClasses]*buckets

	rdb        *redis.Client
	gcra       *redis_rate.Limiter
	redisUntil atomic.Int64 // unix nanos before which Redis is not tried
	redisDown  atomic.Bool

	rejected rejections
}

// New validates cfg and builds a Limiter; with a Redis URL it connects lazily (a Redis
// down at start is a fallback, not an error).
func New(cfg Config) (*Limiter, error) {
	if err := cfg.Default.check("default"); err != nil {
		return nil, err
	}
	for t, l := range cfg.Overrides {
		if err := l.check("tenant " + t); err != nil {
			return nil, err
		}
	}
	if cfg.RedisTimeout <= 0 {
		cfg.RedisTimeout = 50 * time.Millisecond
	}
	if cfg.RetryRedisAfter <= 0 {
		cfg.RetryRedisAfter = time.Second
	}
	if cfg.MaxTenants <= 0 {
		cfg.MaxTenants = 100_000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	l := &Limiter{cfg: cfg, log: cfg.Logger}
	for c := range l.local {
		l.local[c] = newBuckets(cfg.MaxTenants)
	}
	if cfg.RedisURL != "" {
		opts, err := redis.ParseURL(cfg.RedisURL)
		if err != nil {
			// The URL may hold a password: never quote it.
			return nil, errors.New("ratelimit: redis url does not parse")
		}
		opts.DialTimeout = cfg.RedisTimeout
		opts.ReadTimeout = cfg.RedisTimeout
		opts.WriteTimeout = cfg.RedisTimeout
		opts.MaxRetries = -1 // a decision waits for one attempt, not three
		l.rdb = redis.NewClient(opts)
		l.gcra = redis_rate.NewLimiter(l.rdb)
		metrics.RateLimitRedisUp.WithLabelValues().Set(1)
	}
	return l, nil
}

func (l Limits) check(who string) error {
	for _, x := range []Limit{l.API, l.Send} {
		if x.RPS < 0 || x.Burst < 0 {
			return fmt.Errorf("ratelimit: %s: negative limit", who)
		}
		if x.RPS > 0 && x.Burst == 0 {
			return fmt.Errorf("ratelimit: %s: a rate needs a burst of at least 1", who)
		}
	}
	return nil
}

// Close closes the Redis client. A nil Limiter is fine.
func (l *Limiter) Close() error {
	if l == nil || l.rdb == nil {
		return nil
	}
	return l.rdb.Close()
}

// LimitFor is the tenant's limit of class c.
func (l *Limiter) LimitFor(c Class, tenant string) Limit {
	if o, ok := l.cfg.Overrides[tenant]; ok {
		return o.of(c)
	}
	return l.cfg.Default.of(c)
}

// Allow takes one request of class c from the tenant's bucket.
func (l *Limiter) Allow(ctx context.Context, c Class, tenant string) Decision {
	lim := l.LimitFor(c, tenant)
	if lim.RPS <= 0 {
		return Decision{Allowed: true}
	}
	var d Decision
	if l.gcra != nil {
		var ok bool
		if d, ok = l.allowRedis(ctx, c, tenant, lim); !ok {
			d = l.local[c].allow(tenant, lim, time.Now())
			d.Local = true
			metrics.RateLimitLocalFallbacks.Inc()
		}
	} else {
		d = l.local[c].allow(tenant, lim, time.Now())
	}
	if !d.Allowed {
		l.rejected.count(c, tenant)
	}
	return d
}

func (l *Limiter) allowRedis(ctx context.Context, c Class, tenant string, lim Limit) (Decision, bool) {
	now := time.Now()
	if until := l.redisUntil.Load(); until != 0 && now.UnixNano() < until {
		return Decision{}, false
	}
	rctx, cancel := context.WithTimeout(ctx, l.cfg.RedisTimeout)
	res, err := l.gcra.Allow(rctx, "aerogate:"+c.String()+":"+tenant,
		redis_rate.Limit{Rate: lim.RPS, Burst: lim.Burst, Period: time.Second})
	cancel()
	if err != nil {
		l.redisUntil.Store(now.Add(l.cfg.RetryRedisAfter).UnixNano())
		if !l.redisDown.Swap(true) {
			metrics.RateLimitRedisUp.WithLabelValues().Set(0)
			l.log.Warn("rate limits: redis failed, deciding on local buckets (limits now hold per instance)",
				"error", err.Error(), "retry_after", l.cfg.RetryRedisAfter.String())
		}
		return Decision{}, false
	}
	if l.redisDown.Swap(false) {
		metrics.RateLimitRedisUp.WithLabelValues().Set(1)
		l.log.Info("rate limits: redis answers again, limits hold across instances")
	}
	l.redisUntil.Store(0)
	d := Decision{Allowed: res.Allowed > 0, Limit: lim, Remaining: res.Remaining, Reset: max(res.ResetAfter, 0)}
	if !d.Allowed {
		d.RetryAfter = max(res.RetryAfter, 0)
	}
	return d, true
}

// rejections counts 429s by class and tenant with a bounded label set: the first
// maxLabelledTenants tenants rejected keep their id, the rest share "_other".
type rejections struct {
	mu      sync.Mutex
	tenants map[string]bool
}

const maxLabelledTenants = 100

func (r *rejections) count(c Class, tenant string) {
	r.mu.Lock()
	if r.tenants == nil {
		r.tenants = map[string]bool{}
	}
	label := tenant
	if !r.tenants[tenant] {
		if len(r.tenants) < maxLabelledTenants {
			r.tenants[tenant] = true
		} else {
			label = "_other"
		}
	}
	r.mu.Unlock()
	metrics.RateLimitRejections.WithLabelValues(c.String(), label).Inc()
}

// buckets are the local token buckets of one class (golang.org/x/time/rate): sharded
// maps with an LRU list each, at most max buckets in all. Dropping a bucket that had
// refilled loses nothing; past the bound the least recently used goes even if it had
// not (a tenant idle that long gets a full bucket back).
type buckets struct {
	seed   maphash.Seed
	shards [64]bucketShard
	per    int
}

type bucketShard struct {
	mu   sync.Mutex
	m    map[string]*bucket
	head bucket // sentinel of the LRU ring: head.next is the most recent
	_    [40]byte
}

type bucket struct {
	tenant     string
	lim        *rate.Limiter
	prev, next *bucket
}

func newBuckets(max int) *buckets {
	b := &buckets{seed: maphash.MakeSeed(), per: (max + 63) / 64}
	for i := range b.shards {
		s := &b.shards[i]
		s.m = map[string]*bucket{}
		s.head.prev, s.head.next = &s.head, &s.head
	}
	return b
}

// get returns the tenant's bucket, made full when it is new, as the most recent.
func (b *buckets) get(tenant string, lim Limit) *rate.Limiter {
	s := &b.shards[maphash.String(b.seed, tenant)&63]
	s.mu.Lock()
	defer s.mu.Unlock()
	bk := s.m[tenant]
	if bk == nil {
		if len(s.m) >= b.per {
			old := s.head.prev
			old.prev.next, old.next.prev = &s.head, old.prev
			delete(s.m, old.tenant)
		}
		bk = &bucket{tenant: tenant, lim: rate.NewLimiter(rate.Limit(lim.RPS), lim.Burst)}
		s.m[tenant] = bk
	} else {
		bk.prev.next, bk.next.prev = bk.next, bk.prev
	}
	bk.next, bk.prev = s.head.next, &s.head
	s.head.next.prev = bk
	s.head.next = bk
	return bk.lim
}

func (b *buckets) allow(tenant string, lim Limit, now time.Time) Decision {
	rl := b.get(tenant, lim)
	d := Decision{Limit: lim, Allowed: true}
	r := rl.ReserveN(now, 1)
	if delay := r.DelayFrom(now); !r.OK() || delay > 0 {
		r.CancelAt(now)
		d.Allowed = false
		d.RetryAfter = delay
	}
	tokens := rl.TokensAt(now)
	d.Remaining = max(int(tokens), 0)
	d.Reset = time.Duration((float64(lim.Burst) - tokens) / float64(lim.RPS) * float64(time.Second))
	return d
}
