package account

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
)

// NotifyChannel is the channel the whatsapp_accounts trigger notifies on.
const NotifyChannel = "whatsapp_accounts_changed"

// ListenerApplicationName is the application_name of Listen's connection (unless the
// URL sets one), so operators can find it in pg_stat_activity.
const ListenerApplicationName = "aerogate-account-listener"

const (
	minListenBackoff = 100 * time.Millisecond
	maxListenBackoff = 5 * time.Second
)

// changeNotice is the trigger's payload; it names the account, never its token.
type changeNotice struct {
	TenantID      string `json:"tenant_id"`
	PhoneNumberID string `json:"phone_number_id"`
}

// Listen holds a dedicated connection to databaseURL, LISTENs on
// whatsapp_accounts_changed and invalidates on every notification, reconnecting with
// backoff (and dropping the whole cache after a reconnect, since notifications may have
// been missed) until ctx is cancelled. It returns nil on cancellation.
//
// The cache is also dropped right after the first LISTEN: entries cached before it could
// have missed a change.
func (r *Resolver) Listen(ctx context.Context, databaseURL string) error {
	cfg, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		return fmt.Errorf("account listener: %w", err)
	}
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = ListenerApplicationName
	}

	backoff := minListenBackoff
	for {
		err := r.listenOnce(ctx, cfg, func() { backoff = minListenBackoff })
		r.listening.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		// Jitter keeps a fleet of instances from reconnecting in lockstep after a
		// database restart.
		wait := backoff/2 + rand.N(backoff/2+1)
		r.log.Warn("account change listener lost its connection; reconnecting",
			"err", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, maxListenBackoff)
	}
}

// listenOnce connects, LISTENs and invalidates until the connection fails or ctx ends.
func (r *Resolver) listenOnce(ctx context.Context, cfg *pgx.ConnConfig, connected func()) error {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{NotifyChannel}.Sanitize()); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// Anything cached before this point may have changed unseen.
	r.InvalidateAll()
	r.listening.Store(true)
	connected()
	r.log.Debug("account change listener connected")

	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		notice, err := parseNotice(n.Payload)
		if err != nil {
			// Not knowing what changed, drop everything rather than serve stale data.
			r.log.Error("account change notification not understood; dropping the whole account cache", "err", err)
			r.InvalidateAll()
			continue
		}
		r.Invalidate(notice.TenantID, notice.PhoneNumberID)
	}
}

func parseNotice(payload string) (changeNotice, error) {
	var n changeNotice
	if err := json.Unmarshal([]byte(payload), &n); err != nil {
		return n, fmt.Errorf("decoding notification: %w", err)
	}
	if n.TenantID == "" {
		return n, errors.New("notification names no tenant")
	}
	return n, nil
}
