package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/aerostic/aerogate/internal/store"
	"github.com/aerostic/aerogate/internal/store/storetest"
)

func TestMigrateCreatesTablesAndIsIdempotent(t *testing.T) {
	ctx := context.Background()
	url := storetest.NewEmpty(t)

	if err := store.Migrate(ctx, url); err != nil {
		t.Fatalf("first migrate: %v", err)
	}
	cur, latest, err := store.CurrentVersion(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if cur != latest || latest < 1 {
		t.Fatalf("after migrate: version %d of %d", cur, latest)
	}
	if err := store.Migrate(ctx, url); err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	cur2, _, err := store.CurrentVersion(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if cur2 != cur {
		t.Fatalf("second migrate moved version from %d to %d", cur, cur2)
	}

	pool, err := store.Open(ctx, url, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for _, table := range []string{"whatsapp_accounts", "messages", "aerogate_schema_version"} {
		var n int
		if err := pool.QueryRow(ctx,
			"SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = $1", table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Errorf("table %s missing after migrate", table)
		}
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM aerogate_schema_version").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("version table has %d rows, want 1", n)
	}
}

func TestConcurrentMigrate(t *testing.T) {
	ctx := context.Background()
	url := storetest.NewEmpty(t)
	const n = 4
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = store.Migrate(ctx, url) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("migrate %d: %v", i, err)
		}
	}
	cur, latest, err := store.CurrentVersion(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if cur != latest {
		t.Fatalf("version %d of %d", cur, latest)
	}
}

func TestEnsureDatabase(t *testing.T) {
	ctx := context.Background()
	// A name that needs quoting proves the identifier is quoted, not pasted.
	name := "aerogate_test_ensure-" + time.Now().Format("150405.000000")
	url, err := storetest.WithDatabase(storetest.ServerURL(), name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		admin, err := pgx.Connect(ctx, storetest.ServerURL())
		if err != nil {
			t.Error(err)
			return
		}
		defer admin.Close(ctx)
		if err := store.DropDatabase(ctx, admin, name); err != nil {
			t.Error(err)
		}
	})

	for i := range 2 {
		if err := store.EnsureDatabase(ctx, url); err != nil {
			t.Fatalf("ensure #%d: %v", i+1, err)
		}
	}
	pool, err := store.Open(ctx, url, 1)
	if err != nil {
		t.Fatalf("open created database: %v", err)
	}
	var got string
	if err := pool.QueryRow(ctx, "SELECT current_database()").Scan(&got); err != nil {
		t.Fatal(err)
	}
	pool.Close()
	if got != name {
		t.Fatalf("connected to %q, want %q", got, name)
	}
}

func TestOpenErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tests := []struct {
		name string
		url  string
	}{
		{"unparsable", "postgres://user:s3cret@[bad"},
		{"no server", "postgres://user:s3cret@127.0.0.1:1/x?sslmode=disable&connect_timeout=2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool, err := store.Open(ctx, tt.url, 0)
			if err == nil {
				pool.Close()
				t.Fatal("Open succeeded")
			}
			if containsPassword(err.Error()) {
				t.Fatalf("error shows the password: %v", err)
			}
		})
	}
}

func containsPassword(s string) bool { return strings.Contains(s, "s3cret") }

func TestNotifyTrigger(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url, pool := storetest.New(t)

	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "LISTEN whatsapp_accounts_changed"); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO whatsapp_accounts
		(id, tenant_id, waba_id, phone_number_id, access_token, token_key_id)
		VALUES (gen_random_uuid(), 't1', 'w1', 'p1', '\x00', 'k')`); err != nil {
		t.Fatal(err)
	}
	n, err := conn.WaitForNotification(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		TenantID      string `json:"tenant_id"`
		PhoneNumberID string `json:"phone_number_id"`
	}
	if err := json.Unmarshal([]byte(n.Payload), &got); err != nil {
		t.Fatalf("payload %q: %v", n.Payload, err)
	}
	if got.TenantID != "t1" || got.PhoneNumberID != "p1" {
		t.Fatalf("payload %q names the wrong account", n.Payload)
	}
	if strings.Contains(n.Payload, "access_token") {
		t.Fatalf("payload %q mentions the token", n.Payload)
	}
}

// TestMessageWAMIDUnique: a wamid names one message, while any number of messages wait
// without one (accepted, sending).
func TestMessageWAMIDUnique(t *testing.T) {
	ctx := context.Background()
	_, pool := storetest.New(t)
	insert := func(id string, wamid any) error {
		_, err := pool.Exec(ctx, `INSERT INTO messages (id, tenant_id, account_id, phone_number_id, recipient, wamid)
			VALUES ($1, 't1', '00000000-0000-7000-8000-000000000001', '1001', '919800000000', $2)`, id, wamid)
		return err
	}
	for i, id := range []string{"00000000-0000-7000-8000-0000000000a1", "00000000-0000-7000-8000-0000000000a2"} {
		if err := insert(id, nil); err != nil {
			t.Fatalf("message %d without a wamid: %v", i, err)
		}
	}
	if err := insert("00000000-0000-7000-8000-0000000000a3", "wamid.X"); err != nil {
		t.Fatalf("message with a wamid: %v", err)
	}
	var pgErr *pgconn.PgError
	err := insert("00000000-0000-7000-8000-0000000000a4", "wamid.X")
	if !errors.As(err, &pgErr) || pgErr.Code != "23505" {
		t.Fatalf("second message with the same wamid: %v, want a unique violation", err)
	}
	var id string
	if err := pool.QueryRow(ctx, "SELECT id::text FROM messages WHERE wamid = 'wamid.X'").Scan(&id); err != nil || id != "00000000-0000-7000-8000-0000000000a3" {
		t.Fatalf("message by wamid: %q, %v", id, err)
	}
}
