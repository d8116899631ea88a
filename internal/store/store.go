// Package store opens aerogate's Postgres pool and applies its embedded, versioned
// migrations (jackc/tern).
package store

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Open connects a pool to url and pings it. maxConns ≤ 0 keeps pgx's default.
func Open(ctx context.Context, url string, maxConns int) (*pgxpool.Pool, error) {
	panic("unimplemented")
}

// Migrate applies every embedded migration not yet applied to the database at url.
func Migrate(ctx context.Context, url string) error { panic("unimplemented") }

// EnsureDatabase creates the database named in url if it does not exist, connecting to
// the server's "postgres" database to do so (used by `aerogate dev`).
func EnsureDatabase(ctx context.Context, url string) error { panic("unimplemented") }
