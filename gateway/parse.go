package gateway

import (
	"bytes"

	"github.com/valyala/fastjson"

	"github.com/aerostic/aerogate/internal/jsonguard"
	"github.com/aerostic/aerogate/internal/whatsapp"
)

// sendRequest is a validated Cloud API message body. Its byte slices point into the
// request body or into the parser's memory and are valid until either is reused.
type sendRequest struct {
	to            []byte // as sent, e.g. "+91 98765 43210"
	phoneNumberID []byte // from the body; nil when absent
	urgent        bool   // the body's "priority" is "urgent"
	msgType       string
	// payload is the Cloud API body to forward: the body itself, or, when it held
	// aerogate-only fields or a `to` that is not bare digits, the body re-marshalled once
	// without those fields and with `to` as its digits.
	payload []byte
	// waID holds to's digits (whatsapp.AppendRecipient), e.g. 919876543210.
	waID digits
}

// recipient is to normalized to its digits: the wa_id Meta answers with, and what the
// envelope and the Graph call carry.
func (r *sendRequest) recipient() []byte { return r.waID.b[:r.waID.n] }

// messageType returns the Cloud API message type named by b (as a static string, so
// the request keeps no pointer into the parser for it) and whether its object is an array.
func messageType(b []byte) (name string, isArray, ok bool) {
	switch string(b) {
	case "text":
		return "text", false, true
	case "image":
		return "image", false, true
	case "audio":
		return "audio", false, true
	case "video":
		return "video", false, true
	case "document":
		return "document", false, true
	case "sticker":
		return "sticker", false, true
	case "location":
		return "location", false, true
	case "contacts":
		return "contacts", true, true
	case "interactive":
		return "interactive", false, true
	case "template":
		return "template", false, true
	case "reaction":
		return "reaction", false, true
	}
	return "", false, false
}

// hasDuplicateKey reports whether obj names a key twice, ignoring case. Decoders differ
// on duplicates (first or last wins; encoding/json matches struct fields ignoring case),
// so a duplicate could slip an unvalidated value past this check to the sender or Meta.
// Visit unescapes keys first, so "t\u006f" counts as "to".
func hasDuplicateKey(obj *fastjson.Object) bool {
	n := obj.Len()
	if n < 2 {
		return false
	}
	if n > 32 {
		// Not a Cloud API body, but it must not cost quadratic time either.
		seen := make(map[string]struct{}, n)
		dup := false
		obj.Visit(func(key []byte, _ *fastjson.Value) {
			k := string(bytes.ToLower(key))
			if _, ok := seen[k]; ok {
				dup = true
			}
			seen[k] = struct{}{}
		})
		return dup
	}
	var small [32][]byte
	keys := small[:0]
	obj.Visit(func(key []byte, _ *fastjson.Value) { keys = append(keys, key) })
	for i := range keys {
		for j := i + 1; j < len(keys); j++ {
			if len(keys[i]) == len(keys[j]) && bytes.EqualFold(keys[i], keys[j]) {
				return true
			}
		}
	}
	return false
}

// checkJSON is the structure guard every JSON body from outside passes before a parser
// sees it: one linear pass for strict RFC 8259 syntax, valid UTF-8 and the nesting
// limit. The fastjson parser behind it is lenient (NaN, bare control characters, bad
// escapes), so this is also what keeps anything but strict JSON from the sender and
// Meta; and fastjson's own validator costs time quadratic in the nesting depth on a
// body it refuses, so it is not used at all.
func checkJSON(body []byte, maxDepth int) *apiError {
	switch jsonguard.Check(body, maxDepth) {
	case nil:
		return nil
	case jsonguard.ErrTooDeep:
		return errJSONTooDeep
	default:
		return errInvalidJSON
	}
}

// parseSendRequest validates body as a Cloud API message. tenant is the verified tenant
// and tenantFields the names under which a body may repeat it (an equal value is
// dropped, another is errTenantMismatch). payloadBuf is reused for the payload when
// fields have to be removed or `to` normalized; a holds the normalized `to`. maxDepth
// bounds the nesting of arrays and objects (jsonguard.Check). The parser's and the
// arena's memory back the result until their next use.
func parseSendRequest(p *fastjson.Parser, a *fastjson.Arena, body []byte, tenant string, tenantFields []string, payloadBuf []byte, maxDepth int) (sendRequest, []byte, *apiError) {
	var req sendRequest
	if apiErr := checkJSON(body, maxDepth); apiErr != nil {
		return req, payloadBuf, apiErr
	}
	v, err := p.ParseBytes(body)
	if err != nil {
		return req, payloadBuf, errInvalidJSON
	}
	obj, err := v.Object()
	if err != nil {
		return req, payloadBuf, errInvalidJSON
	}

	var (
		product, to, typ, pnid *fastjson.Value
		strip                  bool
	)
	if hasDuplicateKey(obj) {
		return req, payloadBuf, errDuplicateField
	}

	product = obj.Get("messaging_product")
	if product == nil || product.Type() != fastjson.TypeString || string(product.GetStringBytes()) != "whatsapp" {
		return req, payloadBuf, errInvalidProduct
	}

	to = obj.Get("to")
	if to == nil || to.Type() != fastjson.TypeString {
		return req, payloadBuf, errInvalidTo
	}
	req.to = to.GetStringBytes()
	wa, err := whatsapp.AppendRecipient(req.waID.b[:0], req.to)
	if err != nil {
		return req, payloadBuf, errInvalidTo
	}
	req.waID.n = int8(len(wa))
	normalizeTo := !bytes.Equal(wa, req.to)
	strip = normalizeTo

	typ = obj.Get("type")
	if typ == nil || typ.Type() != fastjson.TypeString {
		return req, payloadBuf, errInvalidType
	}
	var isArray, ok bool
	req.msgType, isArray, ok = messageType(typ.GetStringBytes())
	if !ok {
		return req, payloadBuf, errInvalidType
	}
	inner := obj.Get(req.msgType)
	if inner == nil {
		return req, payloadBuf, errInvalidMessageObject
	}
	if want := fastjson.TypeObject; isArray {
		if inner.Type() != fastjson.TypeArray || len(inner.GetArray()) == 0 {
			return req, payloadBuf, errInvalidMessageObject
		}
	} else if inner.Type() != want {
		return req, payloadBuf, errInvalidMessageObject
	}
	if req.msgType == "text" {
		tb := inner.Get("body")
		if tb == nil || tb.Type() != fastjson.TypeString || whatsapp.CheckTextBody(tb.GetStringBytes()) != nil {
			return req, payloadBuf, errInvalidTextBody
		}
	}

	pnid = obj.Get("phone_number_id")
	if pnid != nil {
		if pnid.Type() != fastjson.TypeString {
			return req, payloadBuf, errInvalidPhoneNumberID
		}
		req.phoneNumberID = pnid.GetStringBytes()
		if whatsapp.CheckPhoneNumberID(req.phoneNumberID) != nil {
			return req, payloadBuf, errInvalidPhoneNumberID
		}
		strip = true
	}

	for _, name := range tenantFields {
		tv := obj.Get(name)
		if tv == nil {
			continue
		}
		if tv.Type() != fastjson.TypeString || string(tv.GetStringBytes()) != tenant {
			return req, payloadBuf, errTenantMismatch
		}
		strip = true
	}

	// "priority" is aerogate's, not Meta's: "urgent" or "normal", taken out of the payload.
	if pr := obj.Get("priority"); pr != nil {
		var ok bool
		if pr.Type() == fastjson.TypeString {
			req.urgent, ok = parsePriority(pr.GetStringBytes())
		}
		if !ok {
			return req, payloadBuf, errInvalidPriority
		}
		strip = true
	}

	if !strip {
		// Without surrounding whitespace, the payload starts with '{' as consumers expect.
		req.payload = trimJSONSpace(body)
		return req, payloadBuf, nil
	}
	obj.Del("phone_number_id")
	for _, name := range tenantFields {
		obj.Del(name)
	}
	obj.Del("priority")
	if normalizeTo {
		a.Reset()
		obj.Set("to", a.NewStringBytes(req.recipient()))
	}
	payloadBuf = v.MarshalTo(payloadBuf[:0])
	req.payload = payloadBuf
	return req, payloadBuf, nil
}

// validIdempotencyKey accepts 1 to 255 printable ASCII characters.
func validIdempotencyKey(b []byte) bool {
	if len(b) == 0 || len(b) > 255 {
		return false
	}
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// validRequestID accepts an incoming X-Request-Id worth echoing into logs and answers.
func validRequestID(b []byte) bool {
	if len(b) == 0 || len(b) > 128 {
		return false
	}
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '-', c == '_', c == '.', c == ':':
		default:
			return false
		}
	}
	return true
}

// parseBearer returns the token of an "Authorization: Bearer <token>" header value. The
// scheme is case-insensitive; the token must be one run of visible ASCII.
func parseBearer(h []byte) ([]byte, bool) {
	h = bytes.TrimSpace(h)
	const scheme = "bearer"
	if len(h) <= len(scheme) || !bytes.EqualFold(h[:len(scheme)], []byte(scheme)) || (h[len(scheme)] != ' ' && h[len(scheme)] != '\t') {
		return nil, false
	}
	tok := bytes.TrimLeft(h[len(scheme):], " \t")
	if len(tok) == 0 || len(tok) > 16<<10 {
		return nil, false
	}
	for _, c := range tok {
		if c <= 0x20 || c >= 0x7f {
			return nil, false
		}
	}
	return tok, true
}

// trimJSONSpace drops JSON whitespace around b.
func trimJSONSpace(b []byte) []byte {
	isSpace := func(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

// parsePriority reads a send's priority: "urgent" (true) or "normal" (false); ok is
// false for anything else.
func parsePriority(b []byte) (urgent, ok bool) {
	switch string(b) {
	case "urgent":
		return true, true
	case "normal":
		return false, true
	}
	return false, false
}
