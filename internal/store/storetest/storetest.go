// Package storetest gives tests a fresh, migrated Postgres database of their own that is
// dropped when the test ends.
package storetest

import (
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
)

// New creates a database with a random name on the server at AEROGATE_TEST_DATABASE_URL
// (default postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable), migrates it,
// and drops it (terminating its connections) in t.Cleanup. It returns the new database's
// URL and a pool connected to it.
func New(t testing.TB) (url string, pool *pgxpool.Pool) { panic("unimplemented") }
