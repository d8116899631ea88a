// Package graph is the Meta Graph API client for the WhatsApp Cloud API, and the
// classification of Meta's error codes into what the caller should do (like franz-go's
// kerr: an error knows whether it is retriable).
package graph

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/internal/jsonguard"
	"github.com/aerostic/aerogate/internal/metrics"
	"github.com/aerostic/aerogate/internal/whatsapp"
)

// Config configures the client. Zero fields take config.Default()'s graph settings
// (the one place defaults live).
type Config struct {
	BaseURL         string        // https://graph.facebook.com, or the fake
	Version         string        // like v22.0
	Timeout         time.Duration // per request
	MaxConnsPerHost int
	// AppID and AppSecret are the Meta app's (meta.app_id, meta.app_secret). With a
	// secret, every call made with an access token carries appsecret_proof, as Meta
	// requires when the app has "Require App Secret" on; the Embedded Signup calls
	// (oauth.go) need both.
	AppID     string
	AppSecret string
	// MediaTimeout bounds a media transfer (an upload through Forward, a Download);
	// MediaHosts are the hosts besides BaseURL's that Download sends a token to.
	MediaTimeout time.Duration
	MediaHosts   []string
}

const (
	maxResponseBytes = 64 << 10
	maxFieldLen      = 300 // longest Title/Details/Type kept from an answer
)

// Configuration errors of New, so a caller can name the setting that is wrong.
var (
	ErrBaseURL = errors.New("invalid graph base url")
	ErrVersion = whatsapp.ErrGraphVersion // the one Graph version rule
)

// Action is what a caller does about an error.
type Action int

const (
	// ActionRetry: retry the message with backoff (throughput, app/WABA limits,
	// temporary errors, 5xx, timeouts, connection errors).
	ActionRetry Action = iota + 1
	// ActionRetryRecipient: pair rate limit (131056); delay this recipient only.
	ActionRetryRecipient
	// ActionStopAccount: token expired or invalid (190); mark the account invalid and
	// keep its messages waiting.
	ActionStopAccount
	// ActionPauseNumber: spam restriction (131048) or blocked (368); pause the number and
	// keep its messages waiting.
	ActionPauseNumber
	// ActionFail: permanent (131026, 131047, 131049, 100, other client errors).
	ActionFail
)

func (a Action) String() string {
	switch a {
	case ActionRetry:
		return "retry"
	case ActionRetryRecipient:
		return "retry-recipient"
	case ActionStopAccount:
		return "stop-account"
	case ActionPauseNumber:
		return "pause-number"
	case ActionFail:
		return "fail"
	default:
		return "Action(" + strconv.Itoa(int(a)) + ")"
	}
}

// Error is an error answered by the Graph API (or a transport failure with Code 0).
type Error struct {
	HTTPStatus int
	Code       int
	Subcode    int
	Type       string
	Title      string // Meta's error title or message; never contains the token
	FBTraceID  string
	Temporary  bool // transport failure or timeout: no answer from Meta

	// Details is Meta's error_data.details, when given.
	Details string
	// Transient is Meta's is_transient flag: an unknown code marked transient is retried.
	Transient bool

	cause error // the transport or context error behind a Temporary error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("graph: ")
	if e.Temporary {
		b.WriteString("transport error: ")
		b.WriteString(e.Title)
		return b.String()
	}
	if e.HTTPStatus != 0 {
		b.WriteString("HTTP ")
		b.WriteString(strconv.Itoa(e.HTTPStatus))
		b.WriteString(" ")
	}
	if e.Code != 0 {
		b.WriteString("code ")
		b.WriteString(strconv.Itoa(e.Code))
		if e.Subcode != 0 {
			b.WriteString("/")
			b.WriteString(strconv.Itoa(e.Subcode))
		}
		b.WriteString(" ")
	}
	b.WriteString(e.Title)
	if e.FBTraceID != "" {
		b.WriteString(" (fbtrace_id ")
		b.WriteString(e.FBTraceID)
		b.WriteString(")")
	}
	return b.String()
}

// Unwrap returns the transport or context error behind a Temporary error, so that
// errors.Is(err, context.DeadlineExceeded) works.
func (e *Error) Unwrap() error { return e.cause }

// Meta's error codes (https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes).
const (
	CodeAPIUnknown         = 1
	CodeAPIService         = 2
	CodeAPITooManyCalls    = 4
	CodeInvalidParameter   = 100
	CodeAccessToken        = 190
	CodeBlocked            = 368
	CodeRateLimit          = 80007
	CodeThroughput         = 130429
	CodeSomethingWrong     = 131000
	CodeServiceUnavailable = 131016
	CodeUndeliverable      = 131026
	CodeReengagement       = 131047
	CodeSpamRateLimit      = 131048
	CodeMarketingLimit     = 131049
	CodeUnsupportedType    = 131051
	CodeMediaDownload      = 131052
	CodeMediaUpload        = 131053
	CodePairRateLimit      = 131056
	CodeRegisterRateLimit  = 133016
)

// Action classifies the error by Meta's code, not by HTTP status.
//
// A known code decides alone. An unknown code is retried when Meta marks it transient
// or answers 5xx, and fails for good otherwise. Without a code (no Meta error body), a
// transport failure, a timeout, a 5xx, 408, 429, a redirect (never followed: a
// misconfigured base URL should not fail messages for good) or an invalid 2xx body is
// retried, and any other 4xx fails.
func (e *Error) Action() Action {
	switch e.Code {
	case CodeThroughput, CodeAPITooManyCalls, CodeRateLimit, CodeAPIUnknown, CodeAPIService,
		CodeSomethingWrong, CodeServiceUnavailable, CodeRegisterRateLimit:
		return ActionRetry
	case CodePairRateLimit:
		return ActionRetryRecipient
	case CodeAccessToken:
		return ActionStopAccount
	case CodeSpamRateLimit, CodeBlocked:
		return ActionPauseNumber
	case CodeUndeliverable, CodeReengagement, CodeMarketingLimit, CodeInvalidParameter,
		CodeUnsupportedType, CodeMediaDownload, CodeMediaUpload:
		return ActionFail
	case 0:
		switch {
		case e.Temporary, e.HTTPStatus == 0, e.HTTPStatus >= 500,
			e.HTTPStatus == fasthttp.StatusRequestTimeout, e.HTTPStatus == fasthttp.StatusTooManyRequests,
			e.HTTPStatus < 400:
			return ActionRetry
		}
		return ActionFail
	}
	if e.Code >= 132000 && e.Code < 133000 { // template errors
		return ActionFail
	}
	if e.Transient || e.HTTPStatus >= 500 {
		return ActionRetry
	}
	return ActionFail
}

// Retriable reports whether trying again later may succeed.
//
// It is true for ActionRetry and ActionRetryRecipient only. ActionStopAccount and
// ActionPauseNumber are "wait, do not fail the message" but also "do not just retry":
// the account or number must be fixed or unpaused first, so Retriable is false and the
// caller acts on Action.
func (e *Error) Retriable() bool {
	a := e.Action()
	return a == ActionRetry || a == ActionRetryRecipient
}

// Classify returns the action for any error: a *Error's Action, ActionRetry for
// transport errors, timeouts and context deadline errors. It returns 0 for nil.
func Classify(err error) Action {
	if err == nil {
		return 0
	}
	var ge *Error
	if errors.As(err, &ge) {
		return ge.Action()
	}
	return ActionRetry
}

// SendResult is Meta's answer to a send.
type SendResult struct {
	WAMID string // messages[0].id
	WAID  string // contacts[0].wa_id
}

// Client calls the Graph API. It reuses connections, never follows redirects and
// validates responses. It is safe for concurrent use.
//
// It is built on fasthttp's HostClient rather than net/http: the sender makes thousands
// of small POSTs a second to one host on a 2-core box, and fasthttp does them with
// almost no allocation. fasthttp's Do never follows redirects (only DoRedirects does)
// and never retries a POST, so a send is attempted exactly once per call. HTTP/1.1 only:
// connections are pooled up to MaxConnsPerHost. A context's deadline bounds the
// request; a cancellation without a deadline is only seen before the request starts,
// because fasthttp cannot abort a request in flight.
type Client struct {
	hc      *fasthttp.HostClient
	prefix  string // scheme://host/[path/]version/
	timeout time.Duration
	app     appCredentials

	// The passthrough (passthrough.go): pc forwards calls to the same host with larger
	// answers and streamed bodies; dl downloads media from Meta's media hosts.
	pc           *fasthttp.HostClient
	dl           *fasthttp.Client
	mediaTimeout time.Duration
	mediaHosts   []string
	baseScheme   string
	baseHost     string
}

// sendDuration is the latency child of SendMessage's Graph calls.
var sendDuration = metrics.GraphDuration.WithLabelValues("send_message")

// New returns a client, or an error naming what is wrong with cfg.
func New(cfg Config) (*Client, error) {
	d := config.Default().Graph
	if cfg.BaseURL == "" {
		cfg.BaseURL = d.BaseURL
	}
	if cfg.Version == "" {
		cfg.Version = d.Version
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = d.Timeout
	}
	if cfg.MaxConnsPerHost <= 0 {
		cfg.MaxConnsPerHost = d.MaxConnsPerHost
	}
	if cfg.MediaTimeout <= 0 {
		cfg.MediaTimeout = d.MediaTimeout
	}
	if cfg.MediaHosts == nil {
		cfg.MediaHosts = d.MediaHosts
	}
	// The URL is never quoted: its user info, if any, may be a credential.
	u, err := url.Parse(cfg.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("%w: not a URL", ErrBaseURL)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return nil, fmt.Errorf("%w: want http(s)://host[:port][/path] without user info, query or fragment", ErrBaseURL)
	}
	if _, err := whatsapp.ParseGraphVersion(cfg.Version); err != nil {
		return nil, fmt.Errorf("graph version %q: %w", cfg.Version, err) // wraps ErrVersion
	}
	isTLS := u.Scheme == "https"
	addr := u.Host
	if u.Port() == "" {
		port := "80"
		if isTLS {
			port = "443"
		}
		addr = net.JoinHostPort(u.Hostname(), port)
	}
	path := strings.TrimRight(u.EscapedPath(), "/")
	return &Client{
		hc: &fasthttp.HostClient{
			Addr:                addr,
			IsTLS:               isTLS,
			Name:                "aerogate",
			MaxConns:            cfg.MaxConnsPerHost,
			MaxConnWaitTimeout:  cfg.Timeout,
			MaxIdleConnDuration: 10 * time.Second,
			ReadTimeout:         cfg.Timeout,
			WriteTimeout:        cfg.Timeout,
			MaxResponseBodySize: maxResponseBytes,
			// Meta's response headers run to a few KiB; the 4 KiB default is too small.
			ReadBufferSize: 16 << 10,
			// A POST is never retried here: Meta may have sent the message already.
			RetryIfErr:    func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
			DialDualStack: true,
		},
		prefix:  u.Scheme + "://" + u.Host + path + "/" + cfg.Version + "/",
		timeout: cfg.Timeout,
		app:     newAppCredentials(cfg.AppID, cfg.AppSecret),
		pc: &fasthttp.HostClient{
			Addr:                addr,
			IsTLS:               isTLS,
			Name:                "aerogate",
			MaxConns:            cfg.MaxConnsPerHost,
			MaxConnWaitTimeout:  cfg.Timeout,
			MaxIdleConnDuration: 10 * time.Second,
			ReadTimeout:         cfg.MediaTimeout,
			WriteTimeout:        cfg.MediaTimeout,
			MaxResponseBodySize: maxAnswerBytes,
			ReadBufferSize:      16 << 10,
			// Passthrough calls are the client's own: each is made once.
			RetryIfErr:    func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
			DialDualStack: true,
		},
		dl: &fasthttp.Client{
			Name:                "aerogate",
			MaxConnsPerHost:     cfg.MaxConnsPerHost,
			MaxConnWaitTimeout:  cfg.Timeout,
			MaxIdleConnDuration: 10 * time.Second,
			ReadTimeout:         cfg.MediaTimeout,
			WriteTimeout:        cfg.Timeout,
			ReadBufferSize:      16 << 10,
			StreamResponseBody:  true,
			RetryIfErr:          func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
			DialDualStack:       true,
		},
		mediaTimeout: cfg.MediaTimeout,
		mediaHosts:   append([]string(nil), cfg.MediaHosts...),
		baseScheme:   u.Scheme,
		baseHost:     u.Host,
	}, nil
}

// SendMessage posts payload (a Cloud API message body) to
// {base}/{version}/{phoneNumberID}/messages with the account's bearer token.
// Errors are *Error.
//
// Bad arguments are refused without a request: a phone number id that is not all
// digits, or a payload that is not a JSON object, as code 100 (fail); an empty or
// malformed token as code 190 (stop the account).
func (c *Client) SendMessage(ctx context.Context, phoneNumberID, token string, payload []byte) (SendResult, error) {
	if whatsapp.CheckPhoneNumberID(phoneNumberID) != nil {
		return SendResult{}, &Error{HTTPStatus: fasthttp.StatusBadRequest, Code: CodeInvalidParameter,
			Title: "invalid phone number id (not sent)"}
	}
	if !validToken(token) {
		return SendResult{}, &Error{HTTPStatus: fasthttp.StatusUnauthorized, Code: CodeAccessToken,
			Title: "missing or malformed access token (not sent)"}
	}
	if len(payload) == 0 || payload[0] != '{' || !json.Valid(payload) {
		return SendResult{}, &Error{HTTPStatus: fasthttp.StatusBadRequest, Code: CodeInvalidParameter,
			Title: "payload is not a JSON object (not sent)"}
	}
	if err := ctx.Err(); err != nil {
		return SendResult{}, &Error{Temporary: true, Title: "not sent: " + err.Error(), cause: err}
	}
	deadline := time.Now().Add(c.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}

	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	ub := urlBufs.Get().(*[]byte)
	b := append((*ub)[:0], c.prefix...)
	b = append(b, phoneNumberID...)
	b = append(b, "/messages"...)
	b = c.app.appendProofQuery(b, '?', token)
	req.URI().UpdateBytes(b)
	*ub = b
	urlBufs.Put(ub)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	req.Header.Set(fasthttp.HeaderAuthorization, "Bearer "+token)
	req.SetBodyRaw(payload)

	start := time.Now()
	err := c.hc.DoDeadline(req, resp, deadline)
	sendDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		return SendResult{}, transportError(ctx, err)
	}
	status := resp.StatusCode()
	body := redact(resp.Body(), token)
	if status < 200 || status >= 300 {
		return SendResult{}, ParseError(status, body)
	}
	return parseSuccess(status, body)
}

func transportError(ctx context.Context, err error) *Error {
	cause := err
	if ctxErr := ctx.Err(); ctxErr != nil {
		cause = ctxErr
	}
	title := "request failed"
	switch {
	case errors.Is(err, fasthttp.ErrTimeout), errors.Is(cause, context.DeadlineExceeded):
		title = "timeout"
		if !errors.Is(cause, context.DeadlineExceeded) {
			cause = fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
		}
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		title = "response body too large"
	}
	// fasthttp's errors name the host and the failure, never the request headers.
	return &Error{Temporary: true, Title: title + ": " + truncate(err.Error()), cause: cause}
}

// parsers read success answers, one per send: with encoding/json and its reflection
// that parse was a good part of the client's own CPU per send.
var parsers fastjson.ParserPool

// parseSuccess reads messages[0].id (required) and contacts[0].wa_id of Meta's answer.
func parseSuccess(status int, body []byte) (SendResult, error) {
	// The structure guard first: fastjson's parser builds an error message per level
	// (up to 600) on a deep body it refuses, milliseconds for one hostile answer.
	if jsonguard.Check(body, jsonguard.DefaultMaxDepth) != nil {
		return SendResult{}, &Error{HTTPStatus: status, Title: "invalid success response: " + snippet(body)}
	}
	p := parsers.Get()
	defer parsers.Put(p)
	v, err := p.ParseBytes(body)
	if err != nil || v.Type() != fastjson.TypeObject {
		return SendResult{}, &Error{HTTPStatus: status, Title: "invalid success response: " + snippet(body)}
	}
	var id []byte
	if msgs := v.GetArray("messages"); len(msgs) > 0 {
		id = msgs[0].GetStringBytes("id")
	}
	if len(id) == 0 {
		return SendResult{}, &Error{HTTPStatus: status, Title: "success response without messages[0].id"}
	}
	res := SendResult{WAMID: truncate(string(id))}
	if contacts := v.GetArray("contacts"); len(contacts) > 0 {
		res.WAID = truncate(string(contacts[0].GetStringBytes("wa_id")))
	}
	return res, nil
}

// errorBody is Meta's error answer.
type errorBody struct {
	Error *struct {
		Message        string          `json:"message"`
		Type           string          `json:"type"`
		Code           json.Number     `json:"code"`
		ErrorSubcode   json.Number     `json:"error_subcode"`
		ErrorUserTitle string          `json:"error_user_title"`
		IsTransient    bool            `json:"is_transient"`
		ErrorData      json.RawMessage `json:"error_data"`
		FBTraceID      string          `json:"fbtrace_id"`
	} `json:"error"`
}

// ParseError turns a non-2xx Graph answer into an *Error. It never fails: a body that is
// not Meta's error JSON yields an *Error with the HTTP status and a short, printable
// snippet of the body.
func ParseError(httpStatus int, body []byte) *Error {
	e := &Error{HTTPStatus: httpStatus}
	var eb errorBody
	if err := json.Unmarshal(body, &eb); err != nil || eb.Error == nil {
		e.Title = "unexpected response " + strconv.Itoa(httpStatus)
		if httpStatus >= 300 && httpStatus < 400 {
			e.Title = "unexpected redirect " + strconv.Itoa(httpStatus) + " (not followed)"
		}
		if s := snippet(body); s != "" {
			e.Title += ": " + s
		}
		return e
	}
	m := eb.Error
	e.Code = number(m.Code)
	e.Subcode = number(m.ErrorSubcode)
	e.Type = truncate(m.Type)
	e.Title = truncate(m.Message)
	if e.Title == "" {
		e.Title = truncate(m.ErrorUserTitle)
	}
	if e.Title == "" {
		e.Title = "graph error"
	}
	e.FBTraceID = truncate(m.FBTraceID)
	e.Transient = m.IsTransient
	if len(m.ErrorData) > 0 {
		var data struct {
			Details string `json:"details"`
		}
		if json.Unmarshal(m.ErrorData, &data) == nil {
			e.Details = truncate(data.Details)
		}
	}
	return e
}

// number reads Meta's integer codes, which are JSON numbers (or, defensively, absent).
func number(n json.Number) int {
	v, err := strconv.ParseInt(string(n), 10, 32)
	if err != nil || v < 0 {
		return 0
	}
	return int(v)
}

// validToken allows what can go in a header value: printable ASCII without spaces.
func validToken(s string) bool {
	if s == "" || len(s) > 4096 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// truncate keeps at most maxFieldLen bytes of valid, printable UTF-8.
func truncate(s string) string {
	if len(s) > maxFieldLen {
		s = s[:maxFieldLen]
		for len(s) > 0 && !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "?")
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, s)
}

func snippet(b []byte) string {
	const n = 120
	s := strings.TrimSpace(string(b[:min(len(b), n)]))
	if s == "" {
		return ""
	}
	s = truncate(s)
	if len(b) > n {
		s += "…"
	}
	return s
}

// redact removes the token from an answer, should one ever echo it, before any of the
// answer is kept.
func redact(body []byte, token string) []byte {
	if len(token) < 8 || !bytes.Contains(body, []byte(token)) {
		return body
	}
	return bytes.ReplaceAll(body, []byte(token), []byte("[redacted]"))
}
