package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/auth"
	"github.com/aerostic/aerogate/internal/fakemeta"
	"github.com/aerostic/aerogate/internal/queue"
	"github.com/aerostic/aerogate/internal/secret"
	"github.com/aerostic/aerogate/internal/store/storetest"
)

// kafkaFamiliesInstrumented says whether the producer and consumer in internal/queue
// record the Kafka families (aerogate_kafka_produce_duration_seconds,
// aerogate_kafka_produce_records, aerogate_kafka_consumer_lag,
// aerogate_kafka_consumer_commits_total).
//
// TODO(kafka home): set to true once the shared producer and consumer land; until then
// TestMetricsAfterLoad logs those families instead of requiring them.
const kafkaFamiliesInstrumented = true

func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "aerogate")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startProcess runs the binary with args and env until the test ends.
func startProcess(t *testing.T, bin string, env []string, args ...string) *syncBuffer {
	t.Helper()
	var out syncBuffer
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("aerogate %s output:\n%s", strings.Join(args, " "), out.String())
		}
	})
	return &out
}

// scrape GETs /metrics at base and parses it with the Prometheus text parser.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s/metrics = %d %s", base, resp.StatusCode, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing %s/metrics: %v", base, err)
	}
	return families
}

// value is a sample's counter or gauge value, or a histogram's sample count.
func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

// sum adds the values of the family's samples whose labels include labels.
func sum(families map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	mf, ok := families[name]
	if !ok {
		return 0, false
	}
	total, found := 0.0, false
next:
	for _, m := range mf.Metric {
		have := map[string]string{}
		for _, lp := range m.Label {
			have[lp.GetName()] = lp.GetValue()
		}
		for k, v := range labels {
			if have[k] != v {
				continue next
			}
		}
		total += value(m)
		found = true
	}
	return total, found
}

// TestMetricsAfterLoad runs `aerogate gateway` and `aerogate sender` as the separate
// processes they are in production, sends a short load through them, then scrapes
// /metrics of each over HTTP (the gateway on http.addr, the sender on admin.addr),
// parses it with the Prometheus text parser and checks that every family an operator
// relies on is there with live values.
func TestMetricsAfterLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	ctx := context.Background()

	dbURL, pool := storetest.New(t)
	broker, err := queue.StartEmbedded(queue.EmbeddedConfig{Addr: "127.0.0.1:0", Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)
	fake := fakemeta.New(fakemeta.Options{})
	if err := fake.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fake.Close() })

	keySpec, err := secret.GenerateKeySpec("k1")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := secret.ParseKeyRing([]string{keySpec})
	if err != nil {
		t.Fatal(err)
	}
	repo := account.NewRepository(pool, keys)
	const number, metaToken = "106540352242922", "EAAG-metrics-test-token"
	// 10 messages a second with a bucket of one: every send after the first waits.
	upsert := func() {
		t.Helper()
		if _, err := repo.Upsert(ctx, account.UpsertInput{TenantID: "acme", WABAID: "102290129340398",
			PhoneNumberID: number, AccessToken: metaToken, IsDefault: true, ThroughputMPS: 10}); err != nil {
			t.Fatal(err)
		}
	}
	upsert()
	fake.SetToken(number, metaToken)

	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	jwtSecret := base64.RawURLEncoding.EncodeToString(raw)
	httpAddr, adminAddr := freeAddr(t), freeAddr(t)
	common := []string{
		"AEROGATE_DATABASE_URL=" + dbURL,
		"AEROGATE_KAFKA_BROKERS=" + strings.Join(broker.Addrs(), ","),
		"AEROGATE_KAFKA_PARTITIONS=2",
		"AEROGATE_SECRETS_TOKEN_KEYS=" + keySpec,
		"AEROGATE_LOG_LEVEL=warn",
	}
	startProcess(t, bin, append(common,
		"AEROGATE_HTTP_ADDR="+httpAddr,
		"AEROGATE_JWT_SECRET="+jwtSecret,
	), "gateway")
	// No jwt.secret: the sender does not read it.
	startProcess(t, bin, append(common,
		"AEROGATE_ADMIN_ADDR="+adminAddr,
		"AEROGATE_GRAPH_BASE_URL="+fake.URL(),
		"AEROGATE_GRAPH_TIMEOUT=2s",
		"AEROGATE_SENDER_GROUP_ID=metrics-test",
	), "sender")

	gateway, sender := "http://"+httpAddr, "http://"+adminAddr
	for _, base := range []string{gateway, sender} {
		waitFor(t, 60*time.Second, func() bool {
			resp, err := http.Get(base + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	}

	// The load: sends on both send routes, a status read, an unauthenticated request.
	jwt, err := auth.IssueHS256([]byte(jwtSecret), "tenantId", "acme", time.Hour, "", "")
	if err != nil {
		t.Fatal(err)
	}
	do := func(method, path, body, token string) int {
		t.Helper()
		req, _ := http.NewRequest(method, gateway+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	const v1Sends, graphSends = 8, 4
	for i := range v1Sends {
		body := fmt.Sprintf(`{"messaging_product":"whatsapp","to":"9198765432%02d","type":"text","text":{"body":"m%d"}}`, i, i)
		if s := do("POST", "/v1/messages", body, jwt); s != http.StatusAccepted {
			t.Fatalf("POST /v1/messages = %d", s)
		}
	}
	for i := range graphSends {
		body := fmt.Sprintf(`{"messaging_product":"whatsapp","to":"9198765433%02d","type":"text","text":{"body":"g%d"}}`, i, i)
		if s := do("POST", "/v22.0/"+number+"/messages", body, jwt); s != http.StatusOK {
			t.Fatalf("POST /v22.0/{phone_number_id}/messages = %d", s)
		}
	}
	if s := do("POST", "/v1/messages", `{}`, ""); s != http.StatusUnauthorized {
		t.Fatalf("unauthenticated send = %d", s)
	}
	// A change to the account reaches both processes by NOTIFY.
	upsert()

	waitFor(t, 60*time.Second, func() bool {
		v, _ := sum(scrape(t, sender), "aerogate_sends_total", map[string]string{"outcome": "sent"})
		return v >= v1Sends+graphSends
	})
	// Invalidations arrive asynchronously; the sends above finished after the upsert,
	// but give the listeners a moment in any case.
	waitFor(t, 10*time.Second, func() bool {
		g, _ := sum(scrape(t, gateway), "aerogate_account_cache_invalidations_total", map[string]string{"kind": "account"})
		s, _ := sum(scrape(t, sender), "aerogate_account_cache_invalidations_total", map[string]string{"kind": "account"})
		return g > 0 && s > 0
	})
	// Lanes resolve their account concurrently, so the first wave may be all misses
	// (one single-flight load); two sends one after the other make the second a hit.
	for i := range 2 {
		body := fmt.Sprintf(`{"messaging_product":"whatsapp","to":"9198765434%02d","type":"text","text":{"body":"h%d"}}`, i, i)
		if s := do("POST", "/v1/messages", body, jwt); s != http.StatusAccepted {
			t.Fatalf("POST /v1/messages = %d", s)
		}
		waitFor(t, 60*time.Second, func() bool {
			v, _ := sum(scrape(t, sender), "aerogate_sends_total", map[string]string{"outcome": "sent"})
			return v >= float64(v1Sends+graphSends+i+1)
		})
	}

	type want struct {
		family string
		labels map[string]string
		min    float64 // the value (histograms: the sample count) must be at least this
		kafka  bool    // instrumented by the Kafka producer/consumer
	}
	check := func(base string, wants []want) {
		t.Helper()
		families := scrape(t, base)
		for _, w := range wants {
			v, found := sum(families, w.family, w.labels)
			if w.kafka && !kafkaFamiliesInstrumented {
				t.Logf("TODO(kafka home): %s%v on %s not required yet (found %v, value %v)", w.family, w.labels, base, found, v)
				continue
			}
			if !found {
				t.Errorf("%s/metrics has no %s%v", base, w.family, w.labels)
				continue
			}
			if v < w.min {
				t.Errorf("%s/metrics %s%v = %v, want at least %v", base, w.family, w.labels, v, w.min)
			}
		}
	}
	check(gateway, []want{
		{family: "aerogate_http_requests_total", labels: map[string]string{"role": "gateway", "route": "/v1/messages", "status": "202"}, min: v1Sends},
		{family: "aerogate_http_requests_total", labels: map[string]string{"route": "/{version}/{phone_number_id}/messages", "status": "200"}, min: graphSends},
		{family: "aerogate_http_requests_total", labels: map[string]string{"route": "/v1/messages", "status": "401"}, min: 1},
		{family: "aerogate_http_requests_total", labels: map[string]string{"route": "/readyz", "status": "200"}, min: 1},
		{family: "aerogate_http_request_duration_seconds", labels: map[string]string{"route": "/v1/messages"}, min: v1Sends + 1},
		{family: "aerogate_jwt_cache_requests_total", labels: map[string]string{"result": "hit"}, min: v1Sends + graphSends - 1},
		{family: "aerogate_jwt_cache_requests_total", labels: map[string]string{"result": "miss"}, min: 1},
		{family: "aerogate_account_cache_requests_total", labels: map[string]string{"result": "hit"}, min: 1},
		{family: "aerogate_account_cache_requests_total", labels: map[string]string{"result": "miss"}, min: 1},
		{family: "aerogate_account_cache_invalidations_total", labels: map[string]string{"kind": "account"}, min: 1},
		{family: "aerogate_ready", labels: map[string]string{"check": "token_keys"}, min: 1},
		{family: "aerogate_kafka_produce_duration_seconds", labels: map[string]string{"topic": queue.TopicSends}, min: 1, kafka: true},
		{family: "aerogate_kafka_produce_records", labels: map[string]string{"topic": queue.TopicSends}, min: 1, kafka: true},
	})
	check(sender, []want{
		{family: "aerogate_sends_total", labels: map[string]string{"outcome": "sent", "code": ""}, min: v1Sends + graphSends},
		{family: "aerogate_graph_request_duration_seconds", labels: map[string]string{"operation": "send_message"}, min: v1Sends + graphSends},
		{family: "aerogate_rate_limit_waits_total", labels: map[string]string{"reason": "number"}, min: 1},
		{family: "aerogate_rate_limit_wait_seconds", labels: map[string]string{"reason": "number"}, min: 1},
		{family: "aerogate_account_cache_requests_total", labels: map[string]string{"result": "hit"}, min: 1},
		{family: "aerogate_account_cache_requests_total", labels: map[string]string{"result": "miss"}, min: 1},
		{family: "aerogate_account_cache_invalidations_total", labels: map[string]string{"kind": "account"}, min: 1},
		{family: "aerogate_ready", labels: map[string]string{"check": "account_listener"}, min: 1},
		{family: "aerogate_kafka_consumer_lag", labels: map[string]string{"topic": queue.TopicSends}, min: 0, kafka: true},
		{family: "aerogate_kafka_consumer_commits_total", labels: map[string]string{"topic": queue.TopicSends}, min: 1, kafka: true},
	})

	// Each process shows its own work: the sender answers no HTTP sends, the gateway
	// calls no Graph.
	if v, _ := sum(scrape(t, sender), "aerogate_http_requests_total", map[string]string{"route": "/v1/messages"}); v != 0 {
		t.Errorf("the sender's /metrics counts %v gateway requests", v)
	}
	if v, _ := sum(scrape(t, gateway), "aerogate_sends_total", nil); v != 0 {
		t.Errorf("the gateway's /metrics counts %v sends", v)
	}
}
