package devenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/fakemeta"
	"github.com/aerostic/aerogate/internal/secret"
	"github.com/aerostic/aerogate/internal/store"
)

// mirror makes dev's fake Graph API know every active account's token with its expiry,
// as Meta knows every token it issued: a token added with `aerogate accounts add` (or
// stored before dev started) is then renewed, checked and refused by the fake as Meta
// would. It reads every active account at start and after each reconnection, and each
// account named by a change notification.
type mirror struct {
	pool *pgxpool.Pool
	repo *account.Repository
	fake *fakemeta.Server
	log  *slog.Logger
	url  string

	stop context.CancelFunc
	done chan struct{}
}

// startMirror returns once every active account is known to the fake and the mirror
// listens for changes.
func startMirror(ctx context.Context, cfg config.Config, fake *fakemeta.Server, log *slog.Logger) (*mirror, error) {
	keys, err := secret.ParseKeyRing(cfg.Secrets.TokenKeys)
	if err != nil {
		return nil, fmt.Errorf("secrets.token_keys: %w", err)
	}
	pool, err := store.Open(ctx, cfg.Database.URL, 2)
	if err != nil {
		return nil, err
	}
	m := &mirror{pool: pool, repo: account.NewRepository(pool, keys), fake: fake, log: log, url: cfg.Database.URL,
		done: make(chan struct{})}
	conn, err := m.listen(ctx)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("dev token mirror: %w", err)
	}
	lctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	m.stop = stop
	go m.run(lctx, conn)
	return m, nil
}

// listen connects, LISTENs, then makes the fake know every active account.
func (m *mirror) listen(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, m.url)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{account.NotifyChannel}.Sanitize()); err != nil {
		_ = conn.Close(context.Background())
		return nil, err
	}
	rows, err := m.pool.Query(ctx, `SELECT tenant_id, phone_number_id FROM whatsapp_accounts WHERE token_status = 'active'`)
	if err != nil {
		_ = conn.Close(context.Background())
		return nil, err
	}
	pairs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]string, error) {
		var p [2]string
		err := r.Scan(&p[0], &p[1])
		return p, err
	})
	if err != nil {
		_ = conn.Close(context.Background())
		return nil, err
	}
	for _, p := range pairs {
		m.know(ctx, p[0], p[1])
	}
	return conn, nil
}

func (m *mirror) run(ctx context.Context, conn *pgx.Conn) {
	defer close(m.done)
	for {
		err := m.follow(ctx, conn)
		_ = conn.Close(context.Background())
		for ctx.Err() == nil {
			m.log.Debug("dev token mirror reconnecting", "error", err)
			t := time.NewTimer(time.Second)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			if conn, err = m.listen(ctx); err == nil {
				break
			}
		}
		if ctx.Err() != nil {
			return
		}
	}
}

func (m *mirror) follow(ctx context.Context, conn *pgx.Conn) error {
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		var notice struct {
			TenantID      string `json:"tenant_id"`
			PhoneNumberID string `json:"phone_number_id"`
		}
		if json.Unmarshal([]byte(n.Payload), &notice) == nil && notice.TenantID != "" {
			m.know(ctx, notice.TenantID, notice.PhoneNumberID)
		}
	}
}

// know makes the fake know the account's token, if it is active.
func (m *mirror) know(ctx context.Context, tenantID, phoneNumberID string) {
	a, err := m.repo.Get(ctx, tenantID, phoneNumberID)
	if errors.Is(err, account.ErrNotFound) {
		return
	}
	if err != nil {
		m.log.Warn("dev token mirror: reading account", "tenant", tenantID, "phone_number_id", phoneNumberID, "error", err.Error())
		return
	}
	if a.TokenStatus != account.StatusActive || a.AccessToken == "" {
		return
	}
	k := fakemeta.KnownToken{WABAID: a.WABAID, PhoneNumberID: a.PhoneNumberID}
	if a.TokenExpiresAt != nil {
		k.ExpiresAt = *a.TokenExpiresAt
	}
	if m.fake.KnowToken(a.AccessToken.Reveal(), k) {
		m.log.Debug("fake graph api knows an account's token", "tenant", tenantID, "phone_number_id", phoneNumberID,
			"token_expires_at", a.TokenExpiresAt)
	}
}

func (m *mirror) close() {
	if m.stop != nil {
		m.stop()
		<-m.done
	}
	m.pool.Close()
}
