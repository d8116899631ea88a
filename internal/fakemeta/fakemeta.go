// Package fakemeta is a fake Meta Graph API for tests, bench and `aerogate dev`: it takes
// sends and answers like Meta, checks the bearer token each phone number was given, and can
// add latency, per-number throughput limits and chosen error codes.
package fakemeta

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/router"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"
	"golang.org/x/time/rate"
)

// Options configure a fake.
type Options struct {
	// Latency is added to every send answer.
	Latency time.Duration
	// AcceptAnyToken accepts any non-empty bearer token for a phone number that was not
	// given one with SetToken (dev mode).
	AcceptAnyToken bool
	// MaxReceived bounds the list Received keeps (0: unbounded); past it the oldest
	// entries are dropped. Count is not affected. Long dev or bench runs set it.
	MaxReceived int
	// Logger; nil means slog.Default().
	Logger *slog.Logger

	// AppID and AppSecret are the Meta app the fake plays (Embedded Signup, oauth.go).
	// With AppSecret, a call whose appsecret_proof is wrong is refused (code 100), and
	// with RequireAppSecretProof too one that has none, as Meta does when the app has
	// "Require App Secret" on.
	AppID                 string
	AppSecret             string
	RequireAppSecretProof bool
	// Now is the fake's clock (codes live CodeLifetime by it); nil means time.Now.
	Now func() time.Time
}

// Received is one send the fake accepted or refused, as GET /_fake/messages lists it.
type Received struct {
	PhoneNumberID string `json:"phone_number_id"`
	Token         string `json:"token"` // the bearer token the send carried
	// AppSecretProof is the send's appsecret_proof query parameter, if any (checked when
	// Options.AppSecret is set).
	AppSecretProof string    `json:"appsecret_proof,omitempty"`
	To             string    `json:"to"`
	Body           []byte    `json:"body"`
	WAMID          string    `json:"wamid,omitempty"` // empty when refused
	ErrorCode      int       `json:"error_code,omitempty"`
	At             time.Time `json:"at"`
}

// ErrorSpec is an error the fake answers with.
type ErrorSpec struct {
	HTTPStatus int    `json:"http_status"`
	Code       int    `json:"code"`
	Subcode    int    `json:"subcode,omitempty"`
	Title      string `json:"title"`
}

// Meta error codes the fake produces by itself.
const (
	CodeInvalidParameter = 100
	CodeAccessToken      = 190
	CodeThroughput       = 130429
)

type injected struct {
	n    int // remaining; < 0 means until ClearErrors
	spec ErrorSpec
}

// Server is the fake. HTTP routes:
//
//	POST /{version}/{phone_number_id}/messages   a send, answered like Meta
//	GET  /_fake/messages[?phone_number_id=]      what was received (JSON array of Received)
//	POST /_fake/reset                            forget received messages and injected errors
//	POST /_fake/tokens                           {"phone_number_id","token"}: SetToken
//	POST /_fake/tokens/revoke                    {"token"}: RevokeToken
//	POST /_fake/tokens/state                     {"token"}: Token (known, expiry, revoked, renewals)
//	POST /_fake/errors                           {"phone_number_id" or "to","n","error":ErrorSpec}: FailNext / FailRecipient
//	POST /_fake/throughput                       {"phone_number_id","mps"}: SetThroughput
//	POST /_fake/latency                          {"latency_ms"}: SetLatency
//	GET  /_fake/stats                            {"accepted","received"}
//
// and Meta's Embedded Signup side (oauth.go):
//
//	GET  /{version}/dialog/oauth                 consents at once: redirects to redirect_uri with a code and the state
//	GET  /{version}/oauth/access_token           the code exchange (codes live 30 s, exchange once), and
//	                                             with grant_type=fb_exchange_token the renewal of a token
//	                                             (60 days; expired and revoked tokens refused; counted)
//	GET  /{version}/debug_token                  expiry, validity and granted WABAs of a token
//	GET  /{version}/{waba_id}/phone_numbers      the WABA's numbers
//	POST /{version}/{waba_id}/subscribed_apps    webhook subscription
//	POST /{version}/{phone_number_id}/register   Cloud API registration with a 6-digit PIN
//	POST /_fake/codes                            a code for the JavaScript SDK flow (Grant as JSON)
//
// and the calls of the gateway's Graph passthrough (graphapi.go), each checking the token
// and appsecret_proof and recorded (Calls):
//
//	POST   /{version}/{phone_number_id}/media                         media upload (multipart, to disk)
//	GET    /{version}/{id}                                            a media id's metadata and url, or a number's fields
//	DELETE /{version}/{media_id}                                      delete media
//	GET    /whatsapp_business/attachments/?mid=                       the media's bytes (the url; bearer token only)
//	GET    /{version}/{waba_id}/message_templates                     templates, paged (limit, after)
//	POST   /{version}/{waba_id}/message_templates                     create a template (PENDING)
//	DELETE /{version}/{waba_id}/message_templates?name=[&hsm_id=]    delete a template
//	GET    /{version}/{phone_number_id}/whatsapp_business_profile    the business profile
//	POST   /{version}/{phone_number_id}/whatsapp_business_profile    update it
type Server struct {
	opts    Options
	log     *slog.Logger
	latency atomic.Int64 // nanoseconds

	mu         sync.RWMutex
	tokens     map[string]string
	limits     map[string]*rate.Limiter
	numberErrs map[string]*injected
	rcptErrs   map[string]*injected
	hasErrs    atomic.Bool // fast path: no injected errors at all

	recMu    sync.Mutex
	received [][]Received // in chunks of receivedChunk, so that a long run never copies what it holds
	nRecv    int
	total    atomic.Int64 // sends seen, including refused ones
	accepted atomic.Int64

	idPrefix string
	idSeq    atomic.Uint64

	meta  *metaSide  // Embedded Signup: codes, tokens, WABAs (oauth.go)
	graph *graphSide // media, templates, profiles (graphapi.go)

	srv  *fasthttp.Server
	ln   net.Listener
	done chan struct{}

	// Status webhooks (webhooks.go).
	notifier       *statusNotifier
	wabas          map[string]string
	webhooksPosted atomic.Int64
}

// New returns a fake that is not listening yet.
func New(opts Options) *Server {
	var b [6]byte
	_, _ = rand.Read(b[:])
	s := &Server{
		opts:       opts,
		log:        opts.Logger,
		tokens:     map[string]string{},
		limits:     map[string]*rate.Limiter{},
		numberErrs: map[string]*injected{},
		rcptErrs:   map[string]*injected{},
		idPrefix:   "wamid.HBgL" + hex.EncodeToString(b[:]),
		meta:       newMetaSide(),
		graph:      newGraphSide(),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.latency.Store(int64(opts.Latency))
	return s
}

// Handler returns the fake's HTTP handler, for serving it on a listener of one's own.
func (s *Server) Handler() fasthttp.RequestHandler {
	r := router.New()
	r.POST("/{version}/{phone_number_id}/messages", s.handleSend)
	r.GET("/{version}/dialog/oauth", s.handleDialog)
	r.GET("/{version}/oauth/access_token", s.handleExchange)
	r.GET("/{version}/debug_token", s.handleDebugToken)
	r.GET("/{version}/{waba_id}/phone_numbers", s.handlePhoneNumbers)
	r.POST("/{version}/{waba_id}/subscribed_apps", s.handleSubscribe)
	r.POST("/{version}/{phone_number_id}/register", s.handleRegister)
	r.POST("/{version}/{phone_number_id}/media", s.handleMediaUpload)
	r.GET("/{version}/{id}", s.handleObject)
	r.DELETE("/{version}/{id}", s.handleObject)
	for _, m := range []string{fasthttp.MethodGet, fasthttp.MethodPost, fasthttp.MethodDelete} {
		r.Handle(m, "/{version}/{waba_id}/message_templates", s.handleTemplates)
	}
	r.GET("/{version}/{phone_number_id}/whatsapp_business_profile", s.handleProfile)
	r.POST("/{version}/{phone_number_id}/whatsapp_business_profile", s.handleProfile)
	r.GET("/whatsapp_business/attachments/", s.handleDownload)
	r.POST("/_fake/codes", s.handleCodes)
	r.GET("/_fake/messages", s.handleList)
	r.POST("/_fake/reset", s.handleReset)
	r.POST("/_fake/tokens", s.handleTokens)
	r.POST("/_fake/tokens/revoke", s.handleRevoke)
	r.POST("/_fake/tokens/state", s.handleTokenState)
	r.POST("/_fake/errors", s.handleErrors)
	r.POST("/_fake/throughput", s.handleThroughput)
	r.POST("/_fake/latency", s.handleLatency)
	r.GET("/_fake/stats", s.handleStats)
	r.NotFound = func(ctx *fasthttp.RequestCtx) {
		writeError(ctx, ErrorSpec{HTTPStatus: fasthttp.StatusBadRequest, Code: CodeInvalidParameter,
			Title: "Unknown path components"}, "")
	}
	return func(ctx *fasthttp.RequestCtx) {
		// Start streams bodies so a media upload goes to disk as it arrives; every
		// other call's body is read whole first, within maxBodyBytes.
		if ctx.Request.IsBodyStream() && !bytes.HasSuffix(ctx.Path(), []byte("/media")) {
			b, err := io.ReadAll(io.LimitReader(ctx.RequestBodyStream(), maxBodyBytes+1))
			if err != nil || len(b) > maxBodyBytes {
				ctx.SetConnectionClose()
				writeError(ctx, ErrorSpec{HTTPStatus: fasthttp.StatusRequestEntityTooLarge, Code: CodeInvalidParameter,
					Title: "Request body too large"}, "")
				return
			}
			ctx.Request.SetBody(b)
		}
		r.Handler(ctx)
	}
}

// maxBodyBytes bounds the body of every call but a media upload.
const maxBodyBytes = 1 << 20

// Start listens on addr ("127.0.0.1:0" picks a port) and serves until Close.
func (s *Server) Start(addr string) error {
	if s.ln != nil {
		return errors.New("fakemeta: already started")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("fakemeta: listening on %s: %w", addr, err)
	}
	s.ln = ln
	s.srv = &fasthttp.Server{
		Handler:                      s.Handler(),
		Name:                         "fakemeta",
		ReadTimeout:                  60 * time.Second,
		IdleTimeout:                  60 * time.Second,
		MaxRequestBodySize:           maxBodyBytes,
		StreamRequestBody:            true,
		NoDefaultDate:                true,
		NoDefaultContentType:         true,
		CloseOnShutdown:              true,
		Concurrency:                  256 * 1024,
		ReduceMemoryUsage:            false,
		DisablePreParseMultipartForm: true,
	}
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
			s.log.Error("fakemeta: serving", "err", err)
		}
	}()
	return nil
}

// URL is the base URL to give graph.Config.BaseURL, e.g. http://127.0.0.1:9090.
func (s *Server) URL() string {
	if s.ln == nil {
		return ""
	}
	return "http://" + s.ln.Addr().String()
}

// Close stops the server. Requests in flight get up to 5 seconds to finish.
func (s *Server) Close() error {
	if s.srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.ShutdownWithContext(ctx)
	// Shutdown closes only the listeners Serve has registered: a Close right after Start
	// can come first, and Serve would then accept for ever.
	_ = s.ln.Close()
	<-s.done
	s.closeGraph()
	if s.notifier != nil {
		s.notifier.close()
	}
	if err != nil {
		return fmt.Errorf("fakemeta: shutting down: %w", err)
	}
	return nil
}

// SetToken makes token accepted for phoneNumberID; any other gets error 190, but for a
// business token the fake issued for the number's WABA in a code exchange.
func (s *Server) SetToken(phoneNumberID, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[phoneNumberID] = token
}

// SetLatency changes the added latency.
func (s *Server) SetLatency(d time.Duration) { s.latency.Store(int64(d)) }

// SetThroughput limits phoneNumberID to mps sends a second (a token bucket with a burst
// of mps/10, at least 1); sends over it get error 130429. 0 removes the limit.
func (s *Server) SetThroughput(phoneNumberID string, mps int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if mps <= 0 {
		delete(s.limits, phoneNumberID)
		return
	}
	s.limits[phoneNumberID] = rate.NewLimiter(rate.Limit(mps), max(1, mps/10))
}

// FailNext makes the next n sends to phoneNumberID answer with spec (n < 0: all of them
// until ClearErrors).
func (s *Server) FailNext(phoneNumberID string, n int, spec ErrorSpec) {
	s.inject(s.numberErrs, phoneNumberID, n, spec)
}

// FailRecipient makes the next n sends to that recipient answer with spec
// (n < 0: all of them until ClearErrors).
func (s *Server) FailRecipient(to string, n int, spec ErrorSpec) {
	s.inject(s.rcptErrs, to, n, spec)
}

func (s *Server) inject(m map[string]*injected, key string, n int, spec ErrorSpec) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n == 0 {
		delete(m, key)
	} else {
		m[key] = &injected{n: n, spec: spec}
	}
	s.hasErrs.Store(len(s.numberErrs)+len(s.rcptErrs) > 0)
}

// ClearErrors removes injected errors.
func (s *Server) ClearErrors() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.numberErrs)
	clear(s.rcptErrs)
	s.hasErrs.Store(false)
}

// Received lists what was received, in arrival order.
func (s *Server) Received() []Received {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	out := make([]Received, 0, s.nRecv)
	for _, c := range s.received {
		out = append(out, c...)
	}
	return out
}

// Count returns how many sends were accepted (given a wamid).
func (s *Server) Count() int { return int(s.accepted.Load()) }

// Reset forgets received messages and injected errors. Tokens, throughput limits and
// latency stay.
func (s *Server) Reset() {
	s.ClearErrors()
	s.recMu.Lock()
	s.received, s.nRecv = nil, 0
	s.recMu.Unlock()
	s.accepted.Store(0)
	s.total.Store(0)
}

// receivedChunk is how many records one chunk of the received list holds.
const receivedChunk = 4096

func (s *Server) record(r *Received) {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	last := len(s.received) - 1
	if last < 0 || len(s.received[last]) == cap(s.received[last]) {
		s.received = append(s.received, make([]Received, 0, receivedChunk))
		last++
	}
	s.received[last] = append(s.received[last], *r)
	s.nRecv++
	if m := s.opts.MaxReceived; m > 0 && s.nRecv > m {
		// Keep the newest half at once so that trimming is amortized.
		keep := make([]Received, 0, max(m/2, receivedChunk))
		skip := s.nRecv - m/2
		for _, c := range s.received {
			if skip >= len(c) {
				skip -= len(c)
				continue
			}
			keep = append(keep, c[skip:]...)
			skip = 0
		}
		s.received, s.nRecv = [][]Received{keep}, len(keep)
	}
}

// sendBody is the part of a Cloud API message body the fake checks.
type sendBody struct {
	MessagingProduct string `json:"messaging_product"`
	To               string `json:"to"`
	Template         string // template.name of a template message
}

var bearer = []byte("Bearer ")

// parsers decode send bodies: the fake is on the hot path of every bench, and
// encoding/json cost more than the rest of a send's handling.
var parsers fastjson.ParserPool

func (s *Server) handleSend(ctx *fasthttp.RequestCtx) {
	// Checks and the throughput bucket run on arrival; the latency delays only the answer.
	if d := time.Duration(s.latency.Load()); d > 0 {
		defer time.Sleep(d)
	}
	s.total.Add(1)
	phone, _ := ctx.UserValue("phone_number_id").(string)
	rec := Received{
		PhoneNumberID: phone,
		Body:          append([]byte(nil), ctx.PostBody()...),
		At:            time.Now(),
	}
	auth := ctx.Request.Header.Peek(fasthttp.HeaderAuthorization)
	hasBearer := len(auth) > len(bearer) && string(auth[:len(bearer)]) == string(bearer)
	if hasBearer {
		rec.Token = string(auth[len(bearer):])
	}
	if s.opts.AppSecret != "" {
		rec.AppSecretProof = string(ctx.QueryArgs().Peek("appsecret_proof"))
	}

	var body sendBody
	p := parsers.Get()
	v, err := p.ParseBytes(rec.Body)
	valid := err == nil
	if valid {
		body.MessagingProduct = string(v.GetStringBytes("messaging_product"))
		body.To = string(v.GetStringBytes("to"))
		rec.To = body.To
		if string(v.GetStringBytes("type")) == "template" {
			body.Template = string(v.GetStringBytes("template", "name"))
		}
	}
	parsers.Put(p)

	spec, ok := s.check(hasBearer, phone, rec.Token, valid, &body)
	if ok && s.opts.AppSecret != "" {
		if pspec, bad := s.proofError(ctx, rec.Token); bad {
			spec, ok = pspec, false
		}
	}
	if !ok {
		rec.ErrorCode = spec.Code
		s.record(&rec)
		writeError(ctx, spec, "")
		return
	}
	rec.WAMID = s.idPrefix + strconv.FormatUint(s.idSeq.Add(1), 36)
	s.accepted.Add(1)
	s.record(&rec)
	s.notifySent(phone, body.To, rec.WAMID)

	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("application/json")
	b := make([]byte, 0, 160+2*len(body.To)+len(rec.WAMID))
	b = append(b, `{"messaging_product":"whatsapp","contacts":[{"input":`...)
	b = appendJSONString(b, body.To)
	b = append(b, `,"wa_id":`...)
	b = appendJSONString(b, digits(body.To))
	b = append(b, `}],"messages":[{"id":`...)
	b = appendJSONString(b, rec.WAMID)
	b = append(b, `}]}`...)
	ctx.SetBody(b)
}

// check runs Meta's checks in Meta's order: token, body, then (the fake's own) injected
// errors and throughput.
func (s *Server) check(hasBearer bool, phone, token string, validJSON bool, body *sendBody) (ErrorSpec, bool) {
	if !hasBearer || token == "" {
		return ErrorSpec{HTTPStatus: fasthttp.StatusUnauthorized, Code: CodeAccessToken,
			Title: "An active access token must be used to query information about the current user."}, false
	}
	s.mu.RLock()
	want, known := s.tokens[phone]
	s.mu.RUnlock()
	switch {
	case known && subtle.ConstantTimeCompare([]byte(want), []byte(token)) == 1:
	case s.grantsNumber(token, phone):
		// A business token issued in a code exchange works for every number of its WABA.
	case !known && s.opts.AcceptAnyToken && !s.refused(token):
		// Any token, but one the fake knows to be revoked or expired.
	default:
		return ErrorSpec{HTTPStatus: fasthttp.StatusUnauthorized, Code: CodeAccessToken, Subcode: 463,
			Title: "Error validating access token: Session has expired or the token is invalid."}, false
	}
	if !validJSON {
		return ErrorSpec{HTTPStatus: fasthttp.StatusBadRequest, Code: CodeInvalidParameter,
			Title: "(#100) The parameter messaging_product is required."}, false
	}
	if body.MessagingProduct != "whatsapp" {
		return ErrorSpec{HTTPStatus: fasthttp.StatusBadRequest, Code: CodeInvalidParameter,
			Title: "(#100) The parameter messaging_product is required."}, false
	}
	if body.To == "" {
		return ErrorSpec{HTTPStatus: fasthttp.StatusBadRequest, Code: CodeInvalidParameter,
			Title: "(#100) The parameter to is required."}, false
	}
	if body.Template != "" && body.Template != "hello_world" {
		// The fake's WABAs have Meta's sample template only.
		return ErrorSpec{HTTPStatus: fasthttp.StatusNotFound, Code: 132001,
			Title: "(#132001) Template name does not exist in the translation"}, false
	}
	if s.hasErrs.Load() {
		if spec, ok := s.takeInjected(phone, body.To); ok {
			return spec, false
		}
	}
	s.mu.RLock()
	lim := s.limits[phone]
	s.mu.RUnlock()
	if lim != nil && !lim.Allow() {
		return ErrorSpec{HTTPStatus: fasthttp.StatusTooManyRequests, Code: CodeThroughput,
			Title: "(#130429) Rate limit hit"}, false
	}
	return ErrorSpec{}, true
}

func (s *Server) takeInjected(phone, to string) (ErrorSpec, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range []struct {
		m   map[string]*injected
		key string
	}{{s.numberErrs, phone}, {s.rcptErrs, to}} {
		inj := e.m[e.key]
		if inj == nil {
			continue
		}
		if inj.n > 0 {
			inj.n--
			if inj.n == 0 {
				delete(e.m, e.key)
			}
		}
		s.hasErrs.Store(len(s.numberErrs)+len(s.rcptErrs) > 0)
		return inj.spec, true
	}
	return ErrorSpec{}, false
}

// metaError is Meta's error body.
type metaError struct {
	Error metaErrorBody `json:"error"`
}

type metaErrorBody struct {
	Message      string         `json:"message"`
	Type         string         `json:"type"`
	Code         int            `json:"code"`
	ErrorSubcode int            `json:"error_subcode,omitempty"`
	ErrorData    *metaErrorData `json:"error_data,omitempty"`
	FBTraceID    string         `json:"fbtrace_id"`
}

type metaErrorData struct {
	MessagingProduct string `json:"messaging_product"`
	Details          string `json:"details"`
}

// statusFor picks the HTTP status Meta uses for a code when the spec names none.
func statusFor(code int) int {
	switch code {
	case CodeAccessToken:
		return fasthttp.StatusUnauthorized
	case CodeThroughput, 131056, 4, 80007:
		return fasthttp.StatusTooManyRequests
	case 1, 2, 131000:
		return fasthttp.StatusInternalServerError
	default:
		return fasthttp.StatusBadRequest
	}
}

func writeError(ctx *fasthttp.RequestCtx, spec ErrorSpec, details string) {
	status := spec.HTTPStatus
	if status == 0 {
		status = statusFor(spec.Code)
	}
	title := spec.Title
	if title == "" {
		title = "(#" + strconv.Itoa(spec.Code) + ") Error"
	}
	if details == "" {
		details = title
	}
	var tr [9]byte
	_, _ = rand.Read(tr[:])
	b, _ := json.Marshal(metaError{Error: metaErrorBody{
		Message:      title,
		Type:         "OAuthException",
		Code:         spec.Code,
		ErrorSubcode: spec.Subcode,
		ErrorData:    &metaErrorData{MessagingProduct: "whatsapp", Details: details},
		FBTraceID:    "A" + hex.EncodeToString(tr[:]),
	}})
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	if status == fasthttp.StatusUnauthorized {
		ctx.Response.Header.Set("WWW-Authenticate", `OAuth "Facebook Platform" "invalid_token" "`+title+`"`)
	}
	ctx.SetBody(b)
}

func (s *Server) handleList(ctx *fasthttp.RequestCtx) {
	phone := string(ctx.QueryArgs().Peek("phone_number_id"))
	all := s.Received()
	out := all[:0]
	for _, r := range all {
		if phone == "" || r.PhoneNumberID == phone {
			out = append(out, r)
		}
	}
	if out == nil {
		out = []Received{}
	}
	writeJSON(ctx, fasthttp.StatusOK, out)
}

func (s *Server) handleStats(ctx *fasthttp.RequestCtx) {
	writeJSON(ctx, fasthttp.StatusOK, map[string]int64{"accepted": s.accepted.Load(), "received": s.total.Load()})
}

func (s *Server) handleReset(ctx *fasthttp.RequestCtx) {
	s.Reset()
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

func (s *Server) handleTokens(ctx *fasthttp.RequestCtx) {
	var req struct {
		PhoneNumberID string `json:"phone_number_id"`
		Token         string `json:"token"`
	}
	if !decodeControl(ctx, &req) {
		return
	}
	if req.PhoneNumberID == "" || req.Token == "" {
		controlError(ctx, "phone_number_id and token are required")
		return
	}
	s.SetToken(req.PhoneNumberID, req.Token)
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

func (s *Server) handleErrors(ctx *fasthttp.RequestCtx) {
	var req struct {
		PhoneNumberID string    `json:"phone_number_id"`
		To            string    `json:"to"`
		N             int       `json:"n"`
		Error         ErrorSpec `json:"error"`
	}
	if !decodeControl(ctx, &req) {
		return
	}
	if (req.PhoneNumberID == "") == (req.To == "") || req.Error.Code == 0 {
		controlError(ctx, "exactly one of phone_number_id and to, and error.code, are required")
		return
	}
	if req.PhoneNumberID != "" {
		s.FailNext(req.PhoneNumberID, req.N, req.Error)
	} else {
		s.FailRecipient(req.To, req.N, req.Error)
	}
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

func (s *Server) handleThroughput(ctx *fasthttp.RequestCtx) {
	var req struct {
		PhoneNumberID string `json:"phone_number_id"`
		MPS           int    `json:"mps"`
	}
	if !decodeControl(ctx, &req) {
		return
	}
	if req.PhoneNumberID == "" || req.MPS < 0 {
		controlError(ctx, "phone_number_id and a non-negative mps are required")
		return
	}
	s.SetThroughput(req.PhoneNumberID, req.MPS)
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

func (s *Server) handleLatency(ctx *fasthttp.RequestCtx) {
	var req struct {
		LatencyMS int `json:"latency_ms"`
	}
	if !decodeControl(ctx, &req) {
		return
	}
	if req.LatencyMS < 0 {
		controlError(ctx, "latency_ms must not be negative")
		return
	}
	s.SetLatency(time.Duration(req.LatencyMS) * time.Millisecond)
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

func decodeControl(ctx *fasthttp.RequestCtx, v any) bool {
	if err := json.Unmarshal(ctx.PostBody(), v); err != nil {
		controlError(ctx, "body is not valid JSON: "+err.Error())
		return false
	}
	return true
}

func controlError(ctx *fasthttp.RequestCtx, msg string) {
	writeJSON(ctx, fasthttp.StatusBadRequest, map[string]string{"error": msg})
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		ctx.Error("encoding: "+err.Error(), fasthttp.StatusInternalServerError)
		return
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

// appendJSONString appends s as a JSON string: plain printable ASCII as it is, anything
// else through encoding/json.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func digits(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] >= '0' && s[i] <= '9' {
			out = append(out, s[i])
		}
	}
	return string(out)
}
