package cputime

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aerostic/aerogate/internal/store/storetest"
)

// TestReadCountsThisProcessAndItsDatabase: work in this process and queries on a test
// database both show up; the clock never runs backwards.
func TestReadCountsThisProcessAndItsDatabase(t *testing.T) {
	dbURL, pool := storetest.New(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	database := strings.TrimPrefix(u.Path, "/")
	ctx := context.Background()
	if _, err := pool.Exec(ctx, "SELECT 1"); err != nil { // open the backend before the first reading
		t.Fatal(err)
	}

	before := Read(database)
	deadline := time.Now().Add(300 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x
	}
	if _, err := pool.Exec(ctx, "SELECT count(*) FROM generate_series(1, 3000000)"); err != nil {
		t.Fatal(err)
	}
	used := Read(database).Sub(before)
	if used.Process <= 0 {
		t.Errorf("process CPU %v after a busy loop, want > 0", used.Process)
	}
	if used.Postgres <= 0 {
		t.Errorf("Postgres CPU %v after a query on %s, want > 0", used.Postgres, database)
	}
}
