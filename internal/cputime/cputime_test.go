package cputime

import (
	"context"
	"testing"
	"time"

	"github.com/aerostic/aerogate/internal/store/storetest"
)

// TestReadCountsThisProcessAndItsDatabase: work in this process and queries on a test
// database both show up; the clock never runs backwards.
func TestReadCountsThisProcessAndItsDatabase(t *testing.T) {
	_, pool := storetest.New(t)
	database := pool.Config().ConnConfig.Database
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
