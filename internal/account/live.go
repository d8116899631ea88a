package account

import (
	"context"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/aerostic/aerogate/internal/secret"
)

// Live is what every role reads accounts through: the repository and a resolver kept
// fresh by a LISTEN connection for as long as Live is open.
type Live struct {
	Repository *Repository
	Resolver   *Resolver

	stop func()
	done chan struct{}
}

// OpenLive builds the repository and resolver over pool and starts listening for account
// changes on databaseURL. The listener outlives any request context on purpose: it stops
// only at Close, so a graceful shutdown still sees changes until the end.
func OpenLive(pool *pgxpool.Pool, keys *secret.KeyRing, databaseURL string, opts ResolverOptions) (*Live, error) {
	repo := NewRepository(pool, keys)
	resolver, err := NewResolver(repo, opts)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	ctx, stop := context.WithCancel(context.Background())
	l := &Live{Repository: repo, Resolver: resolver, stop: stop, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		if err := resolver.Listen(ctx, databaseURL); err != nil {
			log.Error("account change notifications stopped", "error", err.Error())
		}
	}()
	return l, nil
}

// Close stops listening, then releases the cache (nothing may resolve through it after).
func (l *Live) Close() {
	l.stop()
	<-l.done
	l.Resolver.Close()
}
