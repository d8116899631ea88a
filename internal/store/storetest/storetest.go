// Package storetest gives tests a fresh, migrated Postgres database of their own that is
// dropped when the test ends.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/aerostic/aerogate/internal/store"
)

// DefaultServerURL is used when AEROGATE_TEST_DATABASE_URL is unset.
const DefaultServerURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// ServerURL returns the URL of the server tests create their databases on.
func ServerURL() string {
	if u := os.Getenv("AEROGATE_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return DefaultServerURL
}

// New creates a database with a random name on the server at AEROGATE_TEST_DATABASE_URL
// (default postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable), migrates it,
// and drops it (terminating its connections) in t.Cleanup. It returns the new database's
// URL and a pool connected to it.
func New(t testing.TB) (url string, pool *pgxpool.Pool) {
	t.Helper()
	url = NewEmpty(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := store.Migrate(ctx, url); err != nil {
		t.Fatalf("storetest: %v", err)
	}
	pool, err := store.Open(ctx, url, 0)
	if err != nil {
		t.Fatalf("storetest: %v", err)
	}
	// Registered after the drop, so it runs before it (cleanups run last-in first-out).
	t.Cleanup(pool.Close)
	return url, pool
}

// NewEmpty creates a database with a random name and no tables, dropped in t.Cleanup,
// and returns its URL (for tests of the migrations themselves).
func NewEmpty(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	server := ServerURL()
	var b [8]byte
	_, _ = rand.Read(b[:])
	name := "aerogate_test_" + hex.EncodeToString(b[:])

	admin, err := pgx.Connect(ctx, server)
	if err != nil {
		t.Fatalf("storetest: connecting to the test server (set AEROGATE_TEST_DATABASE_URL): %v", err)
	}
	defer admin.Close(context.Background())
	if err := store.CreateDatabase(ctx, admin, name); err != nil {
		t.Fatalf("storetest: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		admin, err := pgx.Connect(ctx, server)
		if err != nil {
			t.Errorf("storetest: connecting to drop %s: %v", name, err)
			return
		}
		defer admin.Close(context.Background())
		if err := store.DropDatabase(ctx, admin, name); err != nil {
			t.Errorf("storetest: %v", err)
		}
	})

	dbURL, err := WithDatabase(server, name)
	if err != nil {
		t.Fatalf("storetest: %v", err)
	}
	return dbURL
}

// WithDatabase returns the connection string connStr with its database replaced by name.
// It accepts both URL (postgres://...) and keyword/value forms.
func WithDatabase(connStr, name string) (string, error) {
	if strings.HasPrefix(connStr, "postgres://") || strings.HasPrefix(connStr, "postgresql://") {
		u, err := url.Parse(connStr)
		if err != nil {
			// url.Parse errors quote the input, which may hold a password.
			return "", fmt.Errorf("parsing test database url failed")
		}
		u.Path = "/" + name
		u.RawPath = ""
		return u.String(), nil
	}
	// Keyword/value form: a later dbname overrides an earlier one.
	return connStr + " dbname=" + name, nil
}
