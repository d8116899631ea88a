package role

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/aerostic/aerogate/internal/metrics"
)

const (
	// checkTimeout bounds one round of readiness checks.
	checkTimeout = 2 * time.Second
	// watchInterval is how often Deps re-runs the checks to keep aerogate_ready current
	// for scrapes that never ask /readyz.
	watchInterval = 5 * time.Second
)

// Check is one dependency /readyz checks.
type Check struct {
	Name  string
	Check func(ctx context.Context) error
	// Public shows the check's error on /readyz. Only for errors written to be shown
	// (token_keys names key ids, never a key); other errors are only logged, since they
	// may name hosts or users.
	Public bool
}

// Health answers /healthz and /readyz from its checks and keeps the aerogate_ready
// gauge of each check current. It is safe for concurrent use.
type Health struct {
	log    *slog.Logger
	checks []Check
	gauges []prometheus.Gauge
	// state is each check's last result (0 unknown, 1 ok, 2 down), so a failing
	// check is logged when it starts failing, not on every probe.
	state []atomic.Int32
}

// NewHealth returns a Health over checks; log receives a check's changes of state.
func NewHealth(log *slog.Logger, checks ...Check) *Health {
	if log == nil {
		log = slog.Default()
	}
	h := &Health{log: log, checks: checks, gauges: make([]prometheus.Gauge, len(checks)),
		state: make([]atomic.Int32, len(checks))}
	for i, c := range checks {
		h.gauges[i] = metrics.Ready.WithLabelValues(c.Name)
	}
	return h
}

// Checks returns the checks, for a server that answers /readyz itself.
func (h *Health) Checks() []Check { return h.checks }

// Readiness is the body of /readyz.
type Readiness struct {
	Status string            `json:"status"` // ready or unavailable
	Checks map[string]string `json:"checks"` // name: ok or down
	Down   []string          `json:"down,omitempty"`
	// Errors explains the failures of the checks that may show theirs (token_keys).
	Errors map[string]string `json:"errors,omitempty"`
}

// Ready runs every check concurrently within checkTimeout and reports the result.
func (h *Health) Ready(ctx context.Context) Readiness {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	results := make([]error, len(h.checks))
	var wg sync.WaitGroup
	for i, c := range h.checks {
		wg.Go(func() {
			defer func() {
				if p := recover(); p != nil {
					results[i] = errors.New("check panicked")
				}
			}()
			results[i] = c.Check(ctx)
		})
	}
	wg.Wait()

	r := Readiness{Status: "ready", Checks: make(map[string]string, len(h.checks))}
	for i, c := range h.checks {
		err := results[i]
		h.record(i, err)
		if err == nil {
			r.Checks[c.Name] = "ok"
			continue
		}
		r.Checks[c.Name] = "down"
		r.Down = append(r.Down, c.Name)
		if c.Public {
			if r.Errors == nil {
				r.Errors = map[string]string{}
			}
			r.Errors[c.Name] = err.Error()
		}
	}
	if len(r.Down) > 0 {
		r.Status = "unavailable"
	}
	return r
}

func (h *Health) record(i int, err error) {
	state, value := int32(1), 1.0
	if err != nil {
		state, value = 2, 0
	}
	h.gauges[i].Set(value)
	if h.state[i].Swap(state) == state {
		return
	}
	if err != nil {
		h.log.Warn("readiness check failing", "check", h.checks[i].Name, "error", err.Error())
	} else {
		h.log.Info("readiness check passing", "check", h.checks[i].Name)
	}
}

// Watch runs the checks every interval until ctx ends, so aerogate_ready stays current.
func (h *Health) Watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		h.Ready(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Healthz answers 200 while the process serves.
func (h *Health) Healthz(ctx *fasthttp.RequestCtx) {
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("application/json")
	ctx.SetBodyString(`{"status":"ok"}`)
}

// Readyz answers 200 when every check passes, else 503 naming what is down.
func (h *Health) Readyz(ctx *fasthttp.RequestCtx) {
	r := h.Ready(context.Background())
	status := fasthttp.StatusOK
	if r.Status != "ready" {
		status = fasthttp.StatusServiceUnavailable
	}
	b, err := json.Marshal(r)
	if err != nil {
		ctx.Error(`{"status":"unavailable"}`, fasthttp.StatusInternalServerError)
		return
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}
