package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/internal/auth"
	"github.com/aerostic/aerogate/internal/metrics"
	"github.com/aerostic/aerogate/internal/tenantfield"
)

// ProxyOptions configures the /api/* reverse proxy. Without Upstreams there is none.
type ProxyOptions struct {
	// Upstreams are the backends' base URLs; a request for /api/x goes to base/api/x.
	Upstreams []string
	// Timeout bounds a request up to the backend's response headers (504 past it).
	// Default 30s.
	Timeout time.Duration
	// HealthPath, when set, is GET on every upstream each HealthInterval (default 5s);
	// an answer other than 2xx, or none within the interval, marks the upstream down.
	HealthPath     string
	HealthInterval time.Duration
	// MaxConnsPerUpstream bounds the connections to each upstream (default 512).
	MaxConnsPerUpstream int
	// ClaimHeaders are the headers set from the token's claims (claim → header). The
	// claims must be among the verifier's auth.Config.HeaderClaims, except "sub".
	ClaimHeaders []ClaimHeader
	// ForwardAuthorization passes the client's Authorization header on.
	ForwardAuthorization bool
}

// ClaimHeader maps a JWT claim to the header that carries it to the backend.
type ClaimHeader struct {
	Claim, Header string
}

// Headers the proxy sets itself.
const (
	headerTenantID       = "X-Tenant-Id"
	headerUserID         = "X-User-Id"
	headerForwardedFor   = "X-Forwarded-For"
	headerForwardedProto = "X-Forwarded-Proto"
	headerForwardedHost  = "X-Forwarded-Host"
)

var (
	errUpstreamDown = errors.New("upstream marked down by its health check")

	errProxyBadGateway  = &apiError{502, "bad_gateway", "the backend could not be reached or gave no valid answer"}
	errProxyTimeout     = &apiError{504, "upstream_timeout", "the backend did not answer in time"}
	errProxyUnavailable = &apiError{502, "upstream_unavailable", "no healthy backend"}
	errWebSocket        = &apiError{501, "websocket_not_supported", "WebSocket upgrades are not proxied"}
	errContentEncoding  = &apiError{415, "unsupported_content_encoding", "request bodies must not be compressed (Content-Encoding)"}
	errDuplicateTenant  = &apiError{400, "duplicate_tenant_field", "the body names the tenant field more than once"}
	errMalformedBody    = &apiError{400, "invalid_body", "the body does not parse as its Content-Type says"}
)

// proxy forwards /api/* to the upstreams.
type proxy struct {
	lb        *fasthttp.LBClient
	ups       []*upstream
	opts      ProxyOptions
	names     tenantfield.Names
	maxBody   int
	maxDepth  int             // jsonguard depth of JSON bodies
	identity  map[string]bool // lower-case names, '_' read as '-': removed from the client's request
	log       *slog.Logger
	stopCheck chan struct{}
}

// upstream is one backend: a HostClient that the balancer sees as busy while the health
// check has it down.
type upstream struct {
	name     string // host:port, the metrics label
	base     []byte // path prefix, without a trailing slash
	host     string
	hc       *fasthttp.HostClient
	down     atomic.Bool
	up       prometheus.Gauge
	duration prometheus.Observer
	byStatus [600]atomic.Pointer[prometheus.Counter]
}

func newProxy(o ProxyOptions, names tenantfield.Names, maxBody, maxDepth int, log *slog.Logger) (*proxy, error) {
	d := config.Default().Proxy
	if o.Timeout <= 0 {
		o.Timeout = d.Timeout
	}
	if o.HealthInterval <= 0 {
		o.HealthInterval = d.HealthInterval
	}
	if o.MaxConnsPerUpstream <= 0 {
		o.MaxConnsPerUpstream = d.MaxConnsPerUpstream
	}
	p := &proxy{opts: o, names: names, maxBody: maxBody, maxDepth: maxDepth, log: log, stopCheck: make(chan struct{})}
	p.identity = map[string]bool{"x-tenant-id": true, "x-user-id": true}
	for _, ch := range o.ClaimHeaders {
		p.identity[identityKey([]byte(ch.Header))] = true
	}
	lb := &fasthttp.LBClient{Timeout: o.Timeout}
	for _, raw := range o.Upstreams {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("gateway: proxy upstream %q: want an absolute http(s) URL", redactUserinfo(raw))
		}
		addr := u.Host
		if u.Port() == "" {
			addr = net.JoinHostPort(u.Hostname(), map[string]string{"http": "80", "https": "443"}[u.Scheme])
		}
		up := &upstream{
			name:     addr,
			base:     []byte(strings.TrimRight(u.EscapedPath(), "/")),
			host:     u.Host,
			up:       metrics.ProxyUpstreamUp.WithLabelValues(addr),
			duration: metrics.ProxyDuration.WithLabelValues(addr),
		}
		up.up.Set(1)
		up.hc = &fasthttp.HostClient{
			Addr:                          addr,
			IsTLS:                         u.Scheme == "https",
			MaxConns:                      o.MaxConnsPerUpstream,
			MaxConnWaitTimeout:            o.Timeout,
			ReadTimeout:                   o.Timeout,
			WriteTimeout:                  o.Timeout,
			MaxIdleConnDuration:           30 * time.Second,
			NoDefaultUserAgentHeader:      true,
			DisableHeaderNamesNormalizing: true,
			DisablePathNormalizing:        true,
			StreamResponseBody:            true,
			// Only a bodiless GET or HEAD is sent again after a connection failure:
			// anything else may have had its effect, and a streamed body cannot be
			// read twice.
			RetryIfErr: func(req *fasthttp.Request, attempts int, err error) (bool, bool) {
				return false, attempts < 2 && (req.Header.IsGet() || req.Header.IsHead()) && !req.IsBodyStream()
			},
		}
		p.ups = append(p.ups, up)
		lb.Clients = append(lb.Clients, up)
	}
	if len(p.ups) == 0 {
		return nil, errors.New("gateway: proxy needs at least one upstream")
	}
	p.lb = lb
	if o.HealthPath != "" {
		go p.healthLoop()
	}
	return p, nil
}

func (p *proxy) close() { close(p.stopCheck) }

// DoDeadline sends req to this upstream, its path under the upstream's base path.
func (u *upstream) DoDeadline(req *fasthttp.Request, resp *fasthttp.Response, deadline time.Time) error {
	if u.down.Load() {
		u.count(502)
		return errUpstreamDown
	}
	path := req.URI().PathOriginal()
	if len(u.base) > 0 {
		full := make([]byte, 0, len(u.base)+len(path))
		full = append(append(full, u.base...), path...)
		req.URI().SetPathBytes(full)
	}
	req.Header.SetHost(u.host)
	req.URI().SetHost(u.host)
	start := time.Now()
	err := u.hc.DoDeadline(req, resp, deadline)
	u.duration.Observe(time.Since(start).Seconds())
	u.count(answerStatus(resp, err))
	return err
}

// PendingRequests is what the balancer picks the least busy upstream by; a down one
// looks too busy to pick while another is up.
func (u *upstream) PendingRequests() int {
	if u.down.Load() {
		return 1 << 30
	}
	return u.hc.PendingRequests()
}

func (u *upstream) count(status int) {
	if status < 0 || status >= len(u.byStatus) {
		return
	}
	c := u.byStatus[status].Load()
	if c == nil {
		n := metrics.ProxyRequests.WithLabelValues(u.name, strconv.Itoa(status))
		u.byStatus[status].CompareAndSwap(nil, &n)
		c = u.byStatus[status].Load()
	}
	(*c).Inc()
}

// answerStatus is the status the client gets for an upstream exchange.
func answerStatus(resp *fasthttp.Response, err error) int {
	switch {
	case err == nil:
		return resp.StatusCode()
	case isTimeout(err):
		return 504
	}
	return 502
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, fasthttp.ErrDialTimeout) ||
		errors.Is(err, fasthttp.ErrNoFreeConns) || (errors.As(err, &ne) && ne.Timeout())
}

// healthLoop GETs HealthPath on every upstream each HealthInterval.
func (p *proxy) healthLoop() {
	t := time.NewTicker(p.opts.HealthInterval)
	defer t.Stop()
	for {
		for _, u := range p.ups {
			p.check(u)
		}
		select {
		case <-p.stopCheck:
			return
		case <-t.C:
		}
	}
}

func (p *proxy) check(u *upstream) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(fasthttp.MethodGet)
	path := append(append([]byte(nil), u.base...), p.opts.HealthPath...)
	req.URI().SetPathBytes(path)
	req.Header.SetHost(u.host)
	req.URI().SetHost(u.host)
	err := u.hc.DoTimeout(req, resp, min(p.opts.HealthInterval, p.opts.Timeout))
	if err == nil {
		if s := resp.BodyStream(); s != nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(s, 64<<10))
			_ = resp.CloseBodyStream()
		}
	}
	healthy := err == nil && resp.StatusCode() >= 200 && resp.StatusCode() < 300
	if was := !u.down.Swap(!healthy); was != healthy {
		attrs := []any{"upstream", u.name, "path", p.opts.HealthPath}
		if healthy {
			p.log.Info("proxy upstream up", attrs...)
		} else {
			if err != nil {
				attrs = append(attrs, "error", err.Error())
			} else {
				attrs = append(attrs, "status", resp.StatusCode())
			}
			p.log.Warn("proxy upstream down", attrs...)
		}
	}
	if healthy {
		u.up.Set(1)
	} else {
		u.up.Set(0)
	}
}

// bodyKind is how a request body is checked for a tenant field.
type bodyKind uint8

const (
	bodyOpaque    bodyKind = iota // streamed unchecked: not a type backends read fields from
	bodyJSON                      // buffered up to maxBody, top-level fields checked
	bodyForm                      // buffered up to maxBody, pairs checked
	bodyMultipart                 // parts checked as they stream
	bodyUntyped                   // no Content-Type: buffered, checked as JSON or as a form
)

func kindOf(contentType []byte) (bodyKind, string, *apiError) {
	if len(bytes.TrimSpace(contentType)) == 0 {
		return bodyUntyped, "", nil
	}
	mt, params, err := mime.ParseMediaType(string(contentType))
	if err != nil {
		return 0, "", errMalformedBody
	}
	switch {
	case mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json"):
		return bodyJSON, "", nil
	case mt == "application/x-www-form-urlencoded":
		return bodyForm, "", nil
	case mt == "multipart/form-data":
		if params["boundary"] == "" {
			return 0, "", errMalformedBody
		}
		return bodyMultipart, params["boundary"], nil
	}
	return bodyOpaque, "", nil
}

// serve forwards one request. The token is verified and the query string checked
// (authed) before it runs.
func (p *proxy) serve(ctx *fasthttp.RequestCtx, claims auth.Claims) {
	p.forward(ctx, &claims)
}

// preflight forwards a CORS preflight (OPTIONS with Origin and
// Access-Control-Request-Method), which browsers send without credentials, with no
// identity at all.
func (p *proxy) preflight(ctx *fasthttp.RequestCtx) { p.forward(ctx, nil) }

func isPreflight(ctx *fasthttp.RequestCtx) bool {
	return ctx.IsOptions() && len(ctx.Request.Header.Peek("Origin")) > 0 &&
		len(ctx.Request.Header.Peek("Access-Control-Request-Method")) > 0
}

func (p *proxy) forward(ctx *fasthttp.RequestCtx, claims *auth.Claims) {
	h := &ctx.Request.Header
	if len(h.Peek(fasthttp.HeaderUpgrade)) > 0 {
		writeError(ctx, errWebSocket)
		return
	}
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)

	// The body: checked when it is a kind a backend reads fields from.
	var scan *scanningReader
	hasBody := h.ContentLength() != 0 && h.ContentLength() != -2
	if hasBody && claims == nil {
		writeError(ctx, errBadRequest) // a preflight has no body
		return
	}
	if hasBody {
		if ce := h.ContentEncoding(); len(ce) > 0 && !bytes.EqualFold(ce, []byte("identity")) {
			writeError(ctx, errContentEncoding)
			return
		}
		kind, boundary, apiErr := kindOf(h.ContentType())
		if apiErr != nil {
			writeError(ctx, apiErr)
			return
		}
		switch {
		case kind == bodyOpaque:
			req.SetBodyStream(requestBody(ctx), h.ContentLength())
		case kind == bodyMultipart && (h.ContentLength() < 0 || h.ContentLength() > p.maxBody):
			// A large upload is streamed on as it arrives and scanned on the way; its
			// last byte is held back until the scan is done, so a backend never
			// receives a whole body that carries another tenant's id.
			scan = newScanningReader(requestBody(ctx), p.names, boundary, claims.TenantID)
			req.SetBodyStream(scan, h.ContentLength())
			defer scan.stop()
		default:
			body, apiErr := readBody(ctx, p.maxBody)
			if apiErr != nil {
				writeError(ctx, apiErr)
				return
			}
			if apiErr := p.checkBody(kind, boundary, body, claims.TenantID); apiErr != nil {
				writeError(ctx, apiErr)
				return
			}
			req.SetBodyRaw(body)
		}
	}

	p.copyRequestHeaders(ctx, req, claims)
	resp := fasthttp.AcquireResponse()
	err := p.lb.DoDeadline(req, resp, time.Now().Add(p.opts.Timeout))
	if err != nil {
		fasthttp.ReleaseResponse(resp)
		var sErr *scanError
		switch {
		case scan != nil && scan.refused != nil:
			writeError(ctx, scan.refused)
			return
		case errors.As(err, &sErr):
			writeError(ctx, sErr.apiErr)
			return
		case errors.Is(err, errUpstreamDown) || errors.Is(err, fasthttp.ErrNoAvailableClients):
			writeError(ctx, errProxyUnavailable)
		case isTimeout(err):
			writeError(ctx, errProxyTimeout)
		default:
			writeError(ctx, errProxyBadGateway)
		}
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "1")
		return
	}
	p.copyResponse(ctx, resp)
}

// requestBody is the client's body as a reader, streamed or already read.
func requestBody(ctx *fasthttp.RequestCtx) io.Reader {
	if s := ctx.RequestBodyStream(); s != nil {
		return s
	}
	return bytes.NewReader(ctx.Request.Body())
}

// readBody reads the client's body, up to limit bytes (413 above).
func readBody(ctx *fasthttp.RequestCtx, limit int) ([]byte, *apiError) {
	if cl := ctx.Request.Header.ContentLength(); cl > limit {
		ctx.SetConnectionClose()
		return nil, errBodyTooLarge
	}
	s := ctx.RequestBodyStream()
	if s == nil {
		b := ctx.Request.Body()
		if len(b) > limit {
			return nil, errBodyTooLarge
		}
		return b, nil
	}
	b, err := io.ReadAll(io.LimitReader(s, int64(limit)+1))
	if err != nil {
		ctx.SetConnectionClose()
		return nil, errBadRequest
	}
	if len(b) > limit {
		ctx.SetConnectionClose()
		return nil, errBodyTooLarge
	}
	return b, nil
}

func (p *proxy) checkBody(kind bodyKind, boundary string, body []byte, tenant string) *apiError {
	var err error
	switch kind {
	case bodyJSON:
		// The structure guard every outside JSON passes first: strict syntax, a depth
		// bound, one linear pass.
		if apiErr := checkJSON(body, p.maxDepth); apiErr != nil {
			return apiErr
		}
		err = p.names.JSON(body, tenant)
	case bodyForm:
		err = p.names.Form(body, tenant)
	case bodyMultipart:
		err = p.names.Multipart(bytes.NewReader(body), boundary, tenant)
	case bodyUntyped:
		// No Content-Type: some backends sniff. Read it both ways a backend might.
		if i := bytes.IndexFunc(body, func(r rune) bool { return r != ' ' && r != '\t' && r != '\r' && r != '\n' }); i >= 0 && body[i] == '{' {
			err = p.names.JSON(body, tenant)
		}
		if err == nil {
			err = p.names.Form(body, tenant)
		}
		if errors.Is(err, tenantfield.ErrSyntax) {
			err = nil // not JSON after all: nothing a JSON parser would read
		}
	}
	return tenantError(err)
}

func tenantError(err error) *apiError {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, tenantfield.ErrMismatch):
		return errTenantMismatch
	case errors.Is(err, tenantfield.ErrDuplicate):
		return errDuplicateTenant
	}
	return errMalformedBody
}

// identityKey is a header name as CGI-style servers see it: lower case, '_' as '-'.
func identityKey(name []byte) string {
	b := make([]byte, len(name))
	for i, c := range name {
		switch {
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		case c == '_':
			c = '-'
		}
		b[i] = c
	}
	return string(b)
}

// hopByHop are the headers that concern one connection only (RFC 9110 7.6.1).
var hopByHop = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true, "proxy-authenticate": true,
	"proxy-authorization": true, "te": true, "trailer": true, "transfer-encoding": true, "upgrade": true,
}

// copyRequestHeaders fills req from the client's request: method, path and query as
// received (the path normalized), every end-to-end header but the identity headers
// (removed whatever their case or '_' spelling) and the forwarding headers, which are
// set here from the token and the connection. claims is nil for a preflight.
func (p *proxy) copyRequestHeaders(ctx *fasthttp.RequestCtx, req *fasthttp.Request, claims *auth.Claims) {
	in := &ctx.Request.Header
	out := &req.Header
	out.DisableNormalizing()
	out.SetMethodBytes(in.Method())
	req.URI().SetPathBytes(ctx.Path())
	req.URI().SetQueryStringBytes(ctx.URI().QueryString())
	if !ctx.Request.IsBodyStream() && len(req.Body()) == 0 && in.ContentLength() == 0 {
		out.SetContentLength(0)
	}
	dropped := connectionTokens(in.Peek(fasthttp.HeaderConnection))
	for k, v := range in.All() {
		key := identityKey(k)
		switch {
		case hopByHop[key], dropped[key], p.identity[key],
			key == "host", key == "content-length", key == "x-request-id", key == "forwarded",
			key == "x-real-ip", strings.HasPrefix(key, "x-forwarded-"):
			continue
		case key == "authorization" && (!p.opts.ForwardAuthorization || claims == nil):
			continue
		}
		out.AddBytesKV(k, v)
	}
	if rid := ctx.Response.Header.Peek(headerRequestID); len(rid) > 0 {
		out.SetBytesV(headerRequestID, rid)
	}
	out.Set(headerForwardedFor, ctx.RemoteIP().String())
	if ctx.IsTLS() {
		out.Set(headerForwardedProto, "https")
	} else {
		out.Set(headerForwardedProto, "http")
	}
	out.SetBytesV(headerForwardedHost, in.Host())
	if claims == nil {
		return
	}
	out.Set(headerTenantID, claims.TenantID)
	for _, ch := range p.opts.ClaimHeaders {
		v := claims.Values[ch.Claim]
		if ch.Claim == "sub" && v == "" {
			v = claims.Subject
		}
		if v != "" {
			out.Set(ch.Header, v)
		}
	}
}

// connectionTokens are the header names listed in a Connection header, lower case.
func connectionTokens(v []byte) map[string]bool {
	if len(v) == 0 {
		return nil
	}
	m := map[string]bool{}
	for _, t := range bytes.Split(v, []byte(",")) {
		if t = bytes.TrimSpace(t); len(t) > 0 {
			m[identityKey(t)] = true
		}
	}
	return m
}

// copyResponse answers with the upstream's status, end-to-end headers and body; the
// body streams from the upstream to the client without being held whole.
func (p *proxy) copyResponse(ctx *fasthttp.RequestCtx, resp *fasthttp.Response) {
	rid := append([]byte(nil), ctx.Response.Header.Peek(headerRequestID)...)
	ctx.Response.Reset()
	ctx.Response.Header.DisableNormalizing()
	ctx.Response.SetStatusCode(resp.StatusCode())
	dropped := connectionTokens(resp.Header.Peek(fasthttp.HeaderConnection))
	ctx.Response.Header.SetNoDefaultContentType(true)
	for k, v := range resp.Header.All() {
		key := identityKey(k)
		if hopByHop[key] || dropped[key] || key == "content-length" || key == "date" || key == "server" || key == "x-request-id" {
			continue
		}
		ctx.Response.Header.AddBytesKV(k, v)
	}
	ctx.Response.Header.SetBytesV(headerRequestID, rid)
	if ctx.IsHead() {
		ctx.Response.SkipBody = true
		if cl := resp.Header.ContentLength(); cl >= 0 {
			ctx.Response.Header.SetContentLength(cl)
		}
		_ = resp.CloseBodyStream()
		fasthttp.ReleaseResponse(resp)
		return
	}
	if s := resp.BodyStream(); s != nil {
		ctx.Response.SetBodyStream(&upstreamBody{resp: resp, r: s}, resp.Header.ContentLength())
		return
	}
	ctx.Response.SetBody(resp.Body())
	fasthttp.ReleaseResponse(resp)
}

// upstreamBody streams an upstream response to the client and releases it after.
type upstreamBody struct {
	resp *fasthttp.Response
	r    io.Reader
}

func (b *upstreamBody) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b *upstreamBody) Close() error {
	err := b.resp.CloseBodyStream()
	fasthttp.ReleaseResponse(b.resp)
	return err
}

func redactUserinfo(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "[unparsable]"
	}
	u.User = nil
	return u.String()
}
