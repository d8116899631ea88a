package account

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/dgraph-io/ristretto/v2"
	"golang.org/x/sync/singleflight"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/internal/metrics"
)

// Curried children of the cache families, so a lookup costs one atomic add.
var (
	cacheHits          = metrics.AccountCache.WithLabelValues("hit")
	cacheNegativeHits  = metrics.AccountCache.WithLabelValues("negative_hit")
	cacheMisses        = metrics.AccountCache.WithLabelValues("miss")
	invalidatedAccount = metrics.AccountCacheInvalidations.WithLabelValues("account")
	invalidatedAll     = metrics.AccountCacheInvalidations.WithLabelValues("all")
)

// ResolverOptions tunes the cache.
type ResolverOptions struct {
	// Zero TTL, NegativeTTL and MaxEntries take config.Default()'s accounts settings.
	TTL         time.Duration // positive entries
	NegativeTTL time.Duration // unknown ids
	MaxEntries  int
	// LoadTimeout bounds one database load shared by concurrent callers; default 5s.
	LoadTimeout time.Duration
	// Logger receives Listen's connection events; nil means slog.Default().
	Logger *slog.Logger
}

// entry is one cached answer: an account, or (acct nil) "no such account". It names
// the tenant and phone number id it answers for, so a key collision can never hand one
// tenant another tenant's account.
type entry struct {
	tenantID      string
	phoneNumberID string
	acct          *Account
}

const genStripes = 256 // power of two

// Resolver answers "which account does this tenant send from" from memory, loading from
// the repository on a miss (single-flight per key) and caching unknown ids negatively.
//
// The *Account values it returns are shared by every caller and must not be modified.
type Resolver struct {
	repo  *Repository
	opts  ResolverOptions
	log   *slog.Logger
	cache *ristretto.Cache[string, *entry]
	// group is replaced by InvalidateAll, so no caller joins a load begun before it.
	group atomic.Pointer[singleflight.Group]
	loads atomic.Uint64
	// waiting counts callers blocked on a load (tests use it to line callers up).
	waiting atomic.Int64

	// A load that began before an invalidation must not store what it read after the
	// invalidation dropped the key. Every invalidation bumps the generation of the key's
	// stripe under mu; a load stores only if its stripe's generation is unchanged, and
	// checks and stores under mu's read lock, so the check and the Set are not split by
	// an invalidation.
	mu   sync.RWMutex
	seed maphash.Seed
	gens [genStripes]atomic.Uint64

	listening atomic.Bool
	closeOnce sync.Once

	// watchers: cache key → a channel closed at the key's next invalidation (Watch).
	watchMu  sync.Mutex
	watchers map[string]chan struct{}
}

// NewResolver builds a resolver over repo.
func NewResolver(repo *Repository, opts ResolverOptions) (*Resolver, error) {
	if repo == nil {
		return nil, errors.New("account resolver: nil repository")
	}
	d := config.Default().Accounts
	if opts.TTL <= 0 {
		opts.TTL = d.CacheTTL
	}
	if opts.NegativeTTL <= 0 {
		opts.NegativeTTL = d.NegativeCacheTTL
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = d.CacheMaxEntries
	}
	if opts.LoadTimeout <= 0 {
		opts.LoadTimeout = 5 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	cache, err := ristretto.NewCache(&ristretto.Config[string, *entry]{
		NumCounters: 10 * int64(opts.MaxEntries),
		MaxCost:     int64(opts.MaxEntries),
		BufferItems: 64,
		// Every entry costs 1, so MaxCost counts entries; without this ristretto adds
		// its own per-item overhead to the cost and keeps far fewer entries.
		IgnoreInternalCost: true,
	})
	if err != nil {
		return nil, fmt.Errorf("account resolver cache: %w", err)
	}
	r := &Resolver{repo: repo, opts: opts, log: log, cache: cache, seed: maphash.MakeSeed(),
		watchers: make(map[string]chan struct{})}
	r.group.Store(new(singleflight.Group))
	return r, nil
}

// keyBufs holds scratch buffers for building cache keys on the hit path without
// allocating.
var keyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 96); return &b }}

// Resolve returns the tenant's account with phoneNumberID (empty: the default account),
// or ErrNotFound. It does not check Usable: callers decide. The returned account is
// shared: callers must not modify it.
func (r *Resolver) Resolve(ctx context.Context, tenantID, phoneNumberID string) (*Account, error) {
	if tenantID == "" || strings.IndexByte(tenantID, 0) >= 0 || strings.IndexByte(phoneNumberID, 0) >= 0 {
		// NUL is the key separator, and Postgres text cannot hold it anyway.
		return nil, ErrNotFound
	}

	bp := keyBufs.Get().(*[]byte)
	b := append((*bp)[:0], tenantID...)
	b = append(b, 0)
	b = append(b, phoneNumberID...)
	// ristretto only hashes the key in Get and keeps nothing of it, so a string that
	// aliases the pooled buffer is safe here and saves an allocation per request.
	e, ok := r.cache.Get(unsafe.String(unsafe.SliceData(b), len(b)))
	*bp = b
	keyBufs.Put(bp)
	if ok && e.tenantID == tenantID && e.phoneNumberID == phoneNumberID {
		if e.acct == nil {
			cacheNegativeHits.Inc()
			return nil, ErrNotFound
		}
		cacheHits.Inc()
		return e.acct, nil
	}
	cacheMisses.Inc()
	return r.loadShared(ctx, tenantID, phoneNumberID, cacheKey(tenantID, phoneNumberID))
}

func cacheKey(tenantID, phoneNumberID string) string { return tenantID + "\x00" + phoneNumberID }

// loadShared loads through single-flight. The load runs on its own context so one
// caller giving up does not fail the others waiting on the same key.
func (r *Resolver) loadShared(ctx context.Context, tenantID, phoneNumberID, key string) (*Account, error) {
	ch := r.group.Load().DoChan(key, func() (any, error) {
		return r.load(tenantID, phoneNumberID, key)
	})
	r.waiting.Add(1)
	defer r.waiting.Add(-1)
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		e := res.Val.(*entry)
		if e.acct == nil {
			return nil, ErrNotFound
		}
		return e.acct, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("resolving account: %w", ctx.Err())
	}
}

func (r *Resolver) load(tenantID, phoneNumberID, key string) (*entry, error) {
	stripe := &r.gens[r.stripe(key)]
	gen := stripe.Load()
	r.loads.Add(1)

	ctx, cancel := context.WithTimeout(context.Background(), r.opts.LoadTimeout)
	defer cancel()
	var a *Account
	var err error
	if tenantID == "" {
		a, err = r.repo.getByNumber(ctx, phoneNumberID) // ResolveNumber
	} else {
		a, err = r.repo.Get(ctx, tenantID, phoneNumberID)
	}
	ttl := r.opts.TTL
	switch {
	case errors.Is(err, ErrNotFound):
		a, ttl = nil, r.opts.NegativeTTL
	case err != nil:
		return nil, err
	}
	e := &entry{tenantID: tenantID, phoneNumberID: phoneNumberID, acct: a}

	r.mu.RLock()
	if stripe.Load() == gen {
		// The Set may be dropped (ristretto's buffers are lossy); the next Resolve
		// then simply loads again.
		r.cache.SetWithTTL(key, e, 1, ttl)
	}
	r.mu.RUnlock()
	return e, nil
}

func (r *Resolver) stripe(key string) uint64 {
	return maphash.String(r.seed, key) & (genStripes - 1)
}

// Invalidate drops the cached entries for that tenant and phone number id, the tenant's
// default-account entry, and the number's entry of ResolveNumber.
func (r *Resolver) Invalidate(tenantID, phoneNumberID string) {
	keys := [3]string{cacheKey(tenantID, ""), cacheKey(tenantID, phoneNumberID), cacheKey("", phoneNumberID)}
	n := 3
	if phoneNumberID == "" {
		n = 1
	}
	r.mu.Lock()
	for _, k := range keys[:n] {
		r.gens[r.stripe(k)].Add(1)
		r.cache.Del(k)
		// Callers arriving from now on must not join a load that began before.
		r.group.Load().Forget(k)
	}
	r.mu.Unlock()
	invalidatedAccount.Inc()
	r.notify(keys[:n]...)
}

// Watch returns a channel closed the next time the account of that tenant and phone
// number id is invalidated: a change notification (Listen), an Invalidate, or an
// InvalidateAll. The sender's drain of a stopped account waits on it to resume as soon
// as the account can send again. Watchers of one key share one channel; it is dropped
// once closed.
func (r *Resolver) Watch(tenantID, phoneNumberID string) <-chan struct{} {
	k := cacheKey(tenantID, phoneNumberID)
	r.watchMu.Lock()
	defer r.watchMu.Unlock()
	ch, ok := r.watchers[k]
	if !ok {
		ch = make(chan struct{})
		r.watchers[k] = ch
	}
	return ch
}

// notify closes the watchers of keys (none: every watcher).
func (r *Resolver) notify(keys ...string) {
	r.watchMu.Lock()
	defer r.watchMu.Unlock()
	if len(keys) == 0 {
		for k, ch := range r.watchers {
			close(ch)
			delete(r.watchers, k)
		}
		return
	}
	for _, k := range keys {
		if ch, ok := r.watchers[k]; ok {
			close(ch)
			delete(r.watchers, k)
		}
	}
}

// InvalidateAll drops every cached entry (after a missed notification, for instance).
func (r *Resolver) InvalidateAll() {
	r.mu.Lock()
	for i := range r.gens {
		r.gens[i].Add(1)
	}
	r.cache.Clear()
	// In-flight loads cannot store (their generation moved); a new group keeps callers
	// arriving from now on from joining them.
	r.group.Store(new(singleflight.Group))
	r.mu.Unlock()
	invalidatedAll.Inc()
	r.notify()
}

// Loads counts the repository loads the resolver has made (cache misses that were not
// joined to a load already in flight).
func (r *Resolver) Loads() uint64 { return r.loads.Load() }

// Listening reports whether Listen currently holds a LISTEN connection, so
// invalidations are arriving (for readiness checks).
func (r *Resolver) Listening() bool { return r.listening.Load() }

// Close releases the cache. Call it once nothing resolves through r any more and
// Listen has returned.
func (r *Resolver) Close() {
	r.closeOnce.Do(func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.cache.Close()
	})
}
