package media_test

import (
	"context"
	"errors"
	"testing"

	"github.com/aerostic/aerogate/internal/media"
	"github.com/aerostic/aerogate/internal/store/storetest"
)

func TestRepository(t *testing.T) {
	ctx := context.Background()
	_, pool := storetest.New(t)
	r := media.NewRepository(pool)
	if err := r.Record(ctx, "tenant-a", "771", "1001", media.SourceUploaded); err != nil {
		t.Fatal(err)
	}
	if err := r.Record(ctx, "tenant-a", "771", "1009", media.SourceUploaded); err != nil {
		t.Fatal(err) // again: changes nothing
	}
	if pn, err := r.Owner(ctx, "tenant-a", "771"); err != nil || pn != "1001" {
		t.Fatalf("owner: %q %v", pn, err)
	}
	if _, err := r.Owner(ctx, "tenant-b", "771"); !errors.Is(err, media.ErrNotFound) {
		t.Fatalf("another tenant's media: %v", err)
	}
	if err := r.Forget(ctx, "tenant-a", "771"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Owner(ctx, "tenant-a", "771"); !errors.Is(err, media.ErrNotFound) {
		t.Fatalf("forgotten media: %v", err)
	}
}

// TestInboundMediaIsTheTenants: storing inbound messages (as ingest does, several in one
// statement) makes the media ids in them the receiving tenant's; text and malformed
// media objects record nothing.
func TestInboundMediaIsTheTenants(t *testing.T) {
	ctx := context.Background()
	_, pool := storetest.New(t)
	_, err := pool.Exec(ctx, `
INSERT INTO inbound_messages (tenant_id, account_id, phone_number_id, wamid, from_wa_id, type, sent_at, received_at, message)
VALUES ('tenant-a', gen_random_uuid(), '1001', 'wamid.1', '15550001', 'image', now(), now(), '{"type":"image","image":{"id":"881","mime_type":"image/jpeg"}}'),
       ('tenant-b', gen_random_uuid(), '2001', 'wamid.2', '15550002', 'audio', now(), now(), '{"type":"audio","audio":{"id":"882"}}'),
       ('tenant-a', gen_random_uuid(), '1001', 'wamid.3', '15550001', 'text', now(), now(), '{"type":"text","text":{"body":"hi"}}'),
       ('tenant-a', gen_random_uuid(), '1001', 'wamid.4', '15550001', 'video', now(), now(), '{"type":"video","video":{"id":12}}')`)
	if err != nil {
		t.Fatal(err)
	}
	r := media.NewRepository(pool)
	for _, tc := range []struct{ tenant, id, number string }{{"tenant-a", "881", "1001"}, {"tenant-b", "882", "2001"}} {
		if pn, err := r.Owner(ctx, tc.tenant, tc.id); err != nil || pn != tc.number {
			t.Errorf("%s's inbound media %s: %q %v", tc.tenant, tc.id, pn, err)
		}
	}
	if _, err := r.Owner(ctx, "tenant-a", "882"); !errors.Is(err, media.ErrNotFound) {
		t.Errorf("tenant-b's inbound media is tenant-a's: %v", err)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM media`).Scan(&n); err != nil || n != 2 {
		t.Errorf("media rows: %d %v", n, err)
	}
}
