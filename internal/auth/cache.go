package auth

import (
	"crypto/sha256"
	"sync"
	"time"

	"github.com/aerostic/aerogate/internal/metrics"
)

// Curried children of the JWT cache family: a lookup costs one atomic add.
var (
	jwtCacheHits   = metrics.JWTCache.WithLabelValues("hit")
	jwtCacheMisses = metrics.JWTCache.WithLabelValues("miss")
)

// tokenCache holds verified claims keyed by the SHA-256 of the whole token. A full
// cryptographic hash means no one can craft a token that lands on another tenant's
// entry, and the key is a fixed 32 bytes whatever the token's size.
//
// It is a sharded map rather than ristretto: a hit is one hash, one read lock and one
// map lookup with no allocation, a put is visible at once (tests and the first
// repeated request see it), and there are no background goroutines, so a Verifier
// needs no Close. Eviction is approximate: a full shard drops expired entries it
// meets first, else an arbitrary one (Go randomises map iteration).
type tokenCache struct {
	shards   []cacheShard
	mask     uint8
	perShard int
}

type cacheShard struct {
	mu sync.RWMutex
	m  map[[sha256.Size]byte]Claims
	// pad keeps neighbouring shards' locks off one cache line.
	_ [32]byte
}

const maxShards = 64

func newTokenCache(size int) *tokenCache {
	n := 1
	for n < maxShards && n*2*64 <= size {
		n *= 2
	}
	per := (size + n - 1) / n
	c := &tokenCache{shards: make([]cacheShard, n), mask: uint8(n - 1), perShard: per}
	for i := range c.shards {
		c.shards[i].m = make(map[[sha256.Size]byte]Claims)
	}
	return c
}

// get returns the claims of a cached token that has not yet reached its exp.
func (c *tokenCache) get(key *[sha256.Size]byte, now time.Time) (Claims, bool) {
	s := &c.shards[key[0]&c.mask]
	s.mu.RLock()
	cl, ok := s.m[*key]
	s.mu.RUnlock()
	if !ok {
		jwtCacheMisses.Inc()
		return Claims{}, false
	}
	if !now.Before(cl.ExpiresAt) {
		// Never served past exp; full verification decides from here (with leeway).
		s.mu.Lock()
		if cur, ok := s.m[*key]; ok && !now.Before(cur.ExpiresAt) {
			delete(s.m, *key)
		}
		s.mu.Unlock()
		jwtCacheMisses.Inc()
		return Claims{}, false
	}
	jwtCacheHits.Inc()
	return cl, true
}

func (c *tokenCache) put(key *[sha256.Size]byte, cl Claims, now time.Time) {
	if !now.Before(cl.ExpiresAt) {
		return
	}
	s := &c.shards[key[0]&c.mask]
	s.mu.Lock()
	if _, ok := s.m[*key]; !ok && len(s.m) >= c.perShard {
		evicted := false
		seen := 0
		var victim [sha256.Size]byte
		for k, v := range s.m {
			if !now.Before(v.ExpiresAt) {
				delete(s.m, k)
				evicted = true
			} else if seen == 0 {
				victim = k
			}
			seen++
			if seen == 8 {
				break
			}
		}
		if !evicted {
			delete(s.m, victim)
		}
	}
	s.m[*key] = cl
	s.mu.Unlock()
}

func (c *tokenCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
