package fakemeta

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/aerostic/aerogate/internal/webhook"
)

// The fake plays Meta's webhook side too: it builds webhook bodies like Meta's, signs
// them with an app secret and posts them (WebhookPoster), and, when Options.StatusWebhooks
// names a URL, posts the sent, delivered and read statuses of every send it accepted, as
// Meta does, so a send made through aerogate ends read.

// WebhookMessage is an inbound message of a webhook body (a text message).
type WebhookMessage struct {
	ID        string // the wamid
	From      string // the customer's wa_id
	Name      string // the customer's profile name (contacts[]), if any
	Text      string
	Timestamp time.Time
	// MediaType (image, audio, video, document, sticker) makes it a media message of
	// MediaID (see AddMedia), with MimeType, instead of a text.
	MediaType string
	MediaID   string
	MimeType  string
}

// WebhookStatus is a status of a webhook body.
type WebhookStatus struct {
	ID          string // the wamid of the message
	Status      string // sent, delivered, read or failed
	RecipientID string
	Timestamp   time.Time
	ErrorCode   int // failed only
	ErrorTitle  string
}

// WebhookChange is one change of an entry. A "messages" change (Field empty or
// "messages") carries Messages and Statuses for PhoneNumberID; any other field carries
// Value as it is.
type WebhookChange struct {
	Field              string
	PhoneNumberID      string
	DisplayPhoneNumber string
	Messages           []WebhookMessage
	Statuses           []WebhookStatus
	Value              json.RawMessage
}

// WebhookEntry is one entry of a webhook body: a WABA's changes.
type WebhookEntry struct {
	WABAID  string
	Changes []WebhookChange
}

// WebhookBody returns a webhook body with these entries, shaped like Meta's.
func WebhookBody(entries ...WebhookEntry) []byte {
	type obj = map[string]any
	es := make([]obj, 0, len(entries))
	for _, e := range entries {
		cs := make([]obj, 0, len(e.Changes))
		for _, c := range e.Changes {
			field := c.Field
			if field == "" {
				field = "messages"
			}
			if field != "messages" {
				cs = append(cs, obj{"field": field, "value": c.Value})
				continue
			}
			value := obj{
				"messaging_product": "whatsapp",
				"metadata":          obj{"display_phone_number": c.DisplayPhoneNumber, "phone_number_id": c.PhoneNumberID},
			}
			var contacts, msgs, sts []obj
			for _, m := range c.Messages {
				if m.Name != "" {
					contacts = append(contacts, obj{"profile": obj{"name": m.Name}, "wa_id": m.From})
				}
				msg := obj{"from": m.From, "id": m.ID, "timestamp": unix(m.Timestamp), "type": "text", "text": obj{"body": m.Text}}
				if m.MediaType != "" {
					delete(msg, "text")
					msg["type"] = m.MediaType
					msg[m.MediaType] = obj{"id": m.MediaID, "mime_type": m.MimeType}
				}
				msgs = append(msgs, msg)
			}
			for _, s := range c.Statuses {
				st := obj{"id": s.ID, "status": s.Status, "timestamp": unix(s.Timestamp), "recipient_id": s.RecipientID}
				if s.Status == "failed" {
					st["errors"] = []obj{{"code": s.ErrorCode, "title": s.ErrorTitle, "message": s.ErrorTitle,
						"error_data": obj{"details": s.ErrorTitle}}}
				} else {
					st["conversation"] = obj{"id": "conv-" + s.RecipientID, "origin": obj{"type": "utility"}}
					st["pricing"] = obj{"billable": true, "pricing_model": "PMP", "category": "utility"}
				}
				sts = append(sts, st)
			}
			if contacts != nil {
				value["contacts"] = contacts
			}
			if msgs != nil {
				value["messages"] = msgs
			}
			if sts != nil {
				value["statuses"] = sts
			}
			cs = append(cs, obj{"field": "messages", "value": value})
		}
		es = append(es, obj{"id": e.WABAID, "changes": cs})
	}
	b, _ := json.Marshal(obj{"object": "whatsapp_business_account", "entry": es})
	return b
}

func unix(t time.Time) string {
	if t.IsZero() {
		t = time.Now()
	}
	return strconv.FormatInt(t.Unix(), 10)
}

// WebhookPoster signs webhook bodies with an app secret and posts them to a URL, as Meta
// does.
type WebhookPoster struct {
	URL    string // e.g. http://127.0.0.1:8080/webhooks/meta
	Secret string // the app secret
	Client *fasthttp.Client
}

// Post signs and posts body and returns the answer's status code.
func (p *WebhookPoster) Post(ctx context.Context, body []byte) (int, error) {
	return p.PostSigned(ctx, body, webhook.Sign(p.Secret, body))
}

// PostSigned posts body with the given X-Hub-Signature-256 value ("" sends none).
func (p *WebhookPoster) PostSigned(ctx context.Context, body []byte, signature string) (int, error) {
	c := p.Client
	if c == nil {
		c = defaultClient
	}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(p.URL)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	if signature != "" {
		req.Header.Set(webhook.SignatureHeader, signature)
	}
	req.SetBodyRaw(body)
	timeout := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	if err := c.DoTimeout(req, resp, timeout); err != nil {
		return 0, fmt.Errorf("posting webhook to %s: %w", p.URL, err)
	}
	return resp.StatusCode(), nil
}

var defaultClient = &fasthttp.Client{MaxConnsPerHost: 64, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}

// StatusWebhooks makes the fake post the statuses of each send it accepts.
type StatusWebhooks struct {
	URL    string // where to post; empty turns it off
	Secret string // the app secret to sign with
	// Statuses are posted in this order, each Step after the one before (default
	// sent, delivered, read; 20ms).
	Statuses []string
	Step     time.Duration
}

// statusNotifier posts status webhooks from a bounded queue; a full queue drops the
// oldest work rather than slowing sends down (the bench counts what was posted).
type statusNotifier struct {
	cfg    StatusWebhooks
	poster *WebhookPoster
	queue  chan statusJob
	stop   chan struct{}
	wg     sync.WaitGroup
}

type statusJob struct {
	phone, to, wamid string
	at               time.Time
}

const statusQueue = 1 << 16

// EnableStatusWebhooks starts posting the statuses of accepted sends to cfg.URL.
// It must be called before Start; Close stops it.
func (s *Server) EnableStatusWebhooks(cfg StatusWebhooks) {
	if cfg.URL == "" {
		return
	}
	if len(cfg.Statuses) == 0 {
		cfg.Statuses = []string{"sent", "delivered", "read"}
	}
	if cfg.Step <= 0 {
		cfg.Step = 20 * time.Millisecond
	}
	n := &statusNotifier{cfg: cfg, poster: &WebhookPoster{URL: cfg.URL, Secret: cfg.Secret}, queue: make(chan statusJob, statusQueue), stop: make(chan struct{})}
	for range 8 {
		n.wg.Add(1)
		go n.run(s)
	}
	s.notifier = n
}

// SetWABA names the WABA of a phone number id, for the entry id of its status webhooks
// (default: the phone number id itself).
func (s *Server) SetWABA(phoneNumberID, wabaID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wabas == nil {
		s.wabas = map[string]string{}
	}
	s.wabas[phoneNumberID] = wabaID
}

func (s *Server) wabaOf(phone string) string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if w := s.wabas[phone]; w != "" {
		return w
	}
	return phone
}

// notifySent queues the statuses of an accepted send.
func (s *Server) notifySent(phone, to, wamid string) {
	if s.notifier == nil {
		return
	}
	select {
	case s.notifier.queue <- statusJob{phone: phone, to: digits(to), wamid: wamid, at: time.Now()}:
	default:
		s.log.Warn("fakemeta: status webhook queue full; statuses of a send dropped", "wamid", wamid)
	}
}

func (n *statusNotifier) run(s *Server) {
	defer n.wg.Done()
	for {
		var j statusJob
		select {
		case j = <-n.queue:
		case <-n.stop:
			return
		}
		n.post(s, j)
	}
}

// post posts a send's statuses, each at its time, until the fake closes.
func (n *statusNotifier) post(s *Server, j statusJob) {
	for i, st := range n.cfg.Statuses {
		due := j.at.Add(time.Duration(i+1) * n.cfg.Step)
		if d := time.Until(due); d > 0 {
			select {
			case <-time.After(d):
			case <-n.stop:
				return
			}
		}
		body := WebhookBody(WebhookEntry{WABAID: s.wabaOf(j.phone), Changes: []WebhookChange{{
			PhoneNumberID: j.phone,
			Statuses:      []WebhookStatus{{ID: j.wamid, Status: st, RecipientID: j.to, Timestamp: time.Now()}},
		}}})
		if !n.deliver(s, body) {
			return
		}
	}
}

// deliver posts body until it is answered 200 (Meta retries too), a few times at most;
// false when the fake closes meanwhile.
func (n *statusNotifier) deliver(s *Server, body []byte) bool {
	for attempt := range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		code, err := n.poster.Post(ctx, body)
		cancel()
		if err == nil && code == http.StatusOK {
			s.webhooksPosted.Add(1)
			return true
		}
		select {
		case <-time.After(time.Duration(100<<attempt) * time.Millisecond):
		case <-n.stop:
			return false
		}
	}
	return true
}

// WebhooksPosted is how many status webhooks were answered 200.
func (s *Server) WebhooksPosted() int64 { return s.webhooksPosted.Load() }

// close stops posting; statuses not posted yet are dropped.
func (n *statusNotifier) close() {
	close(n.stop)
	n.wg.Wait()
}
