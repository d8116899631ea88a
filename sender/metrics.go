package sender

import (
	"strconv"

	"github.com/aerostic/aerogate/internal/metrics"
)

// Outcomes of aerogate_sends_total.
const (
	outcomeSent    = "sent"
	outcomeRetried = "retried"
	outcomeFailed  = "failed"
	outcomeParked  = "parked"
	outcomeSkipped = "skipped"
)

// Curried children for the outcomes without a Meta code, the common ones; a Meta code
// is looked up when it happens (an error path).
var (
	sendsSent    = metrics.Sends.WithLabelValues(outcomeSent, "")
	sendsSkipped = metrics.Sends.WithLabelValues(outcomeSkipped, "")

	waitsNumber       = metrics.RateLimitWaits.WithLabelValues("number")
	waitSecondsNumber = metrics.RateLimitWaitSeconds.WithLabelValues("number")
	waitsPair         = metrics.RateLimitWaits.WithLabelValues("pair")
	waitSecondsPair   = metrics.RateLimitWaitSeconds.WithLabelValues("pair")
	waitsPaused       = metrics.RateLimitWaits.WithLabelValues("paused")
)

// countSend counts one outcome with Meta's error code (0: none).
func countSend(outcome string, code int) {
	c := ""
	if code != 0 {
		c = strconv.Itoa(code)
	}
	metrics.Sends.WithLabelValues(outcome, c).Inc()
}
