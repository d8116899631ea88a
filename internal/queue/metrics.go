package queue

import (
	"errors"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/aerostic/aerogate/internal/metrics"
)

// produceMetrics are one producer's children of the produce families (its topic curried
// once, so a batch costs no label lookup).
type produceMetrics struct {
	duration, records       prometheus.Observer
	notWritten, unknownFate prometheus.Counter
}

func newProduceMetrics(topic string) produceMetrics {
	return produceMetrics{
		duration:    metrics.ProduceDuration.WithLabelValues(topic),
		records:     metrics.ProduceRecords.WithLabelValues(topic),
		notWritten:  metrics.ProduceErrors.WithLabelValues(topic, "not_written"),
		unknownFate: metrics.ProduceErrors.WithLabelValues(topic, "unknown"),
	}
}

// observe records one produce batch: its time (with retries), its records and, when any
// of its messages failed, one error by outcome.
func (m produceMetrics) observe(took time.Duration, records int, errs []error) {
	m.duration.Observe(took.Seconds())
	m.records.Observe(float64(records))
	for _, err := range errs {
		if err == nil {
			continue
		}
		if outcomeUnknown(err) {
			m.unknownFate.Inc()
		} else {
			m.notWritten.Inc()
		}
		return
	}
}

// outcomeUnknown tells a failure after which the broker may have written the batch
// (ErrOutcomeUnknown) from one where it did not (ErrNotWritten).
func outcomeUnknown(err error) bool { return errors.Is(err, ErrOutcomeUnknown) }

// consumerMetrics are one partition's children of the consumer families.
type consumerMetrics struct {
	labels    []string
	lag       prometheus.Gauge
	commits   prometheus.Counter
	committed prometheus.Gauge
}

func newConsumerMetrics(group, topic string, partition int) consumerMetrics {
	labels := []string{group, topic, strconv.Itoa(partition)}
	return consumerMetrics{
		labels:    labels,
		lag:       metrics.ConsumerLag.WithLabelValues(labels...),
		commits:   metrics.ConsumerCommits.WithLabelValues(labels...),
		committed: metrics.ConsumerCommittedOffset.WithLabelValues(labels...),
	}
}

// release drops the partition's gauges when this process no longer owns it, so that two
// processes never both report a partition; the commit counter stays.
func (m consumerMetrics) release() {
	metrics.ConsumerLag.DeleteLabelValues(m.labels...)
	metrics.ConsumerCommittedOffset.DeleteLabelValues(m.labels...)
}
