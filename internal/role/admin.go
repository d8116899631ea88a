package role

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/aerostic/aerogate/internal/metrics"
)

// Admin is a process's operations listener: GET /metrics (Prometheus), /healthz and
// /readyz, nothing else. It carries no tenant data and needs no token: bind it to an
// address only operators reach.
type Admin struct {
	ln  net.Listener
	srv *fasthttp.Server
	log *slog.Logger
}

// AdminHandler routes /metrics, /healthz and /readyz; anything else is 404.
func AdminHandler(h *Health) fasthttp.RequestHandler {
	metricsHandler := metrics.Handler()
	return func(ctx *fasthttp.RequestCtx) {
		get := ctx.IsGet() || ctx.IsHead()
		switch string(ctx.Path()) {
		case "/metrics":
			if get {
				metricsHandler(ctx)
				return
			}
		case "/healthz":
			if get {
				h.Healthz(ctx)
				return
			}
		case "/readyz":
			if get {
				h.Readyz(ctx)
				return
			}
		default:
			ctx.Error(`{"error":{"code":"not_found","message":"no such route"}}`, fasthttp.StatusNotFound)
			ctx.SetContentType("application/json")
			return
		}
		ctx.Response.Header.Set(fasthttp.HeaderAllow, "GET, HEAD")
		ctx.Error(`{"error":{"code":"method_not_allowed","message":"method not allowed"}}`, fasthttp.StatusMethodNotAllowed)
		ctx.SetContentType("application/json")
	}
}

// ServeAdmin listens on addr and serves AdminHandler(h) until Shutdown.
func ServeAdmin(addr string, h *Health, log *slog.Logger) (*Admin, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening: %w", err)
	}
	a := &Admin{
		ln:  ln,
		log: log,
		srv: &fasthttp.Server{
			Handler:               AdminHandler(h),
			Name:                  "aerogate",
			ReadTimeout:           10 * time.Second,
			WriteTimeout:          10 * time.Second,
			IdleTimeout:           time.Minute,
			MaxRequestBodySize:    4 << 10,
			NoDefaultContentType:  true,
			CloseOnShutdown:       true,
			SecureErrorLogMessage: true,
		},
	}
	go func() {
		if err := a.srv.Serve(ln); err != nil {
			log.Error("admin listener stopped", "addr", addr, "error", err.Error())
		}
	}()
	log.Info("admin listening", "addr", ln.Addr().String(), "paths", "/metrics /healthz /readyz")
	return a, nil
}

// Addr is the address the listener is bound to.
func (a *Admin) Addr() string { return a.ln.Addr().String() }

// Shutdown stops the listener, waiting for requests in flight until ctx ends.
func (a *Admin) Shutdown(ctx context.Context) error {
	if err := a.srv.ShutdownWithContext(ctx); err != nil {
		return fmt.Errorf("shutting down admin listener: %w", err)
	}
	return nil
}
