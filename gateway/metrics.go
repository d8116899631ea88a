package gateway

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/fasthttp/router"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/aerostic/aerogate/internal/metrics"
)

// metricsRole is the role label of the gateway's HTTP families.
const metricsRole = "gateway"

// routeKey is the request user value under which a route's handler leaves its
// routeMetrics for the middleware. A zero-size key and a pointer value: no allocation.
type routeKey struct{}

// routeMetrics are one route's children of the HTTP families: the latency histogram is
// curried once, and the counter of each status code is curried the first time that
// status is answered, so a request costs two atomic operations and no label lookup.
type routeMetrics struct {
	route    string
	duration prometheus.Observer
	byStatus [600]atomic.Pointer[prometheus.Counter]
}

func newRouteMetrics(route string) *routeMetrics {
	return &routeMetrics{route: route, duration: metrics.HTTPDuration.WithLabelValues(metricsRole, route)}
}

func (m *routeMetrics) observe(status int, d time.Duration) {
	m.duration.Observe(d.Seconds())
	if status < 0 || status >= len(m.byStatus) {
		metrics.HTTPRequests.WithLabelValues(metricsRole, m.route, strconv.Itoa(status)).Inc()
		return
	}
	p := m.byStatus[status].Load()
	if p == nil {
		c := metrics.HTTPRequests.WithLabelValues(metricsRole, m.route, strconv.Itoa(status))
		m.byStatus[status].CompareAndSwap(nil, &c)
		p = m.byStatus[status].Load()
	}
	(*p).Inc()
}

// handle registers h on r for method and pattern, labelling its requests with pattern.
func handle(r *router.Router, method, pattern string, h fasthttp.RequestHandler) {
	m := newRouteMetrics(pattern)
	r.Handle(method, pattern, func(ctx *fasthttp.RequestCtx) {
		ctx.SetUserValue(routeKey{}, m)
		h(ctx)
	})
}

// routeOf is the routeMetrics of the route that served ctx; unmatched when none did.
func (s *Server) routeOf(ctx *fasthttp.RequestCtx) *routeMetrics {
	if m, ok := ctx.UserValue(routeKey{}).(*routeMetrics); ok {
		return m
	}
	return s.unmatched
}
