package sender

import (
	"context"
	"fmt"
	"time"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/internal/message"
	"github.com/aerostic/aerogate/internal/queue"
	"github.com/aerostic/aerogate/internal/role"
)

// Run is the sender role of `aerogate sender` and `aerogate dev`: role.Open checks the
// keys the sender reads (no jwt.secret) and builds what every role shares (Postgres pool,
// token key ring, account resolver kept fresh by LISTEN/NOTIFY, the Graph client, the
// admin listener on admin.addr with /metrics, /healthz and /readyz); Run adds the Kafka
// producers and consumer group and sends until ctx is cancelled; then it finishes or
// abandons in-flight work (abandoned work is redelivered, never committed past) and
// returns nil. tune, if any, adjusts the Options before the sender is built (tests
// shorten the group timeouts with it).
func Run(ctx context.Context, cfg config.Config, tune ...func(*Options)) error {
	deps, err := role.Open(ctx, cfg, config.RoleSender)
	if err != nil {
		return fmt.Errorf("sender: %w", err)
	}
	defer deps.Close()
	// Serve until the drain that follows a signal: readiness is false by then.
	ctx = deps.Context()

	kafka := deps.Kafka
	kafka.ClientID = cfg.Kafka.ClientID + "-sender"
	topics := []string{queue.TopicSends, queue.TopicSendsRetry, queue.TopicSendsDLQ}
	if err := kafka.EnsureTopics(ctx, topics, cfg.Kafka.Partitions, cfg.Kafka.ReplicationFactor); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("sender: %w", err)
	}

	opts := Options{
		Kafka:          kafka,
		Config:         cfg.Sender,
		Accounts:       deps.Accounts.Resolver,
		AccountRepo:    deps.Accounts.Repository,
		Messages:       message.NewRepository(deps.Pool),
		Graph:          deps.Graph,
		Logger:         deps.Log,
		ProduceTimeout: cfg.Kafka.WriteTimeout,
		// A revoked partition lets its Graph calls finish before it moves; the group
		// must wait that long, or the next owner could send them again.
		RebalanceTimeout: max(queue.DefaultRebalance, cfg.Graph.Timeout+5*time.Second),
		// A claim outlasts a Graph call at its timeout and the recording of its outcome.
		ClaimLease: cfg.Graph.Timeout + 15*time.Second,
	}
	for _, f := range tune {
		f(&opts)
	}
	s, err := New(opts)
	if err != nil {
		return err
	}
	return s.Run(ctx)
}
