package gateway

import (
	"testing"
	"time"

	"github.com/aerostic/aerogate/internal/metrics"
)

// BenchmarkRequestMetrics is what the metrics add to one accepted send, both cores busy:
// the clock read for the latency, the route's histogram and status counter, and the JWT
// and account cache counters. Compare it with the CPU per accepted request of
// `go run ./bench gateway` (~60-80 µs on the CI machine kind).
func BenchmarkRequestMetrics(b *testing.B) {
	m := newRouteMetrics("/v1/messages")
	jwtHit := metrics.JWTCache.WithLabelValues("hit")
	acctHit := metrics.AccountCache.WithLabelValues("hit")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			start := time.Now()
			jwtHit.Inc()
			acctHit.Inc()
			m.observe(202, time.Since(start))
		}
	})
}
