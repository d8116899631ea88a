package webhook

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/valyala/fastjson"

	"github.com/aerostic/aerogate/internal/jsonguard"
)

// ErrUnparsable means a body is not a WhatsApp Business Account webhook at all: not JSON,
// not an object, another "object", or no "entry" array. Nothing in it can be stored.
var ErrUnparsable = errors.New("webhook body does not parse")

// Kind is what an Item is.
type Kind uint8

const (
	// KindMessage is one element of value.messages of a "messages" change: a customer's
	// message to the business number.
	KindMessage Kind = iota + 1
	// KindStatus is one element of value.statuses: sent, delivered, read or failed.
	KindStatus
	// KindQuality is the value of a "phone_number_quality_update" change.
	KindQuality
	// KindOther is the value of any other change field (account_update,
	// message_template_status_update, …), or one element of value.errors of a "messages"
	// change. It is kept as it is, not interpreted.
	KindOther
	// KindInvalid is an entry, change or item that cannot be read; Reason says why.
	KindInvalid
)

func (k Kind) String() string {
	switch k {
	case KindMessage:
		return "message"
	case KindStatus:
		return "status"
	case KindQuality:
		return "quality"
	case KindOther:
		return "other"
	case KindInvalid:
		return "invalid"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Item is one update of a webhook body. Entry, Change and Index place it in the body
// (Index is -1 for items that are a whole change value). Raw and Contact are copies the
// caller may keep.
type Item struct {
	Kind                 Kind
	Entry, Change, Index int
	WABAID               string // entry.id
	Field                string // change.field
	// PhoneNumberID is value.metadata.phone_number_id of a "messages" change: the
	// business number the item belongs to.
	PhoneNumberID      string
	DisplayPhoneNumber string // value.metadata.display_phone_number, or value.display_phone_number

	ID          string    // the wamid of a message or status
	Type        string    // a message's type
	From        string    // a message's sender (wa_id)
	Status      string    // a status: sent, delivered, read or failed
	RecipientID string    // a status's recipient_id
	Timestamp   time.Time // Meta's timestamp of a message or status
	ErrorCode   int       // a failed status's first error
	ErrorTitle  string
	Event       string // a quality update's event (THROUGHPUT_UPGRADE, …)
	Limit       string // a quality update's current_limit

	Raw     []byte // the item as JSON: the message or status object, or the change value
	Contact []byte // a message's contact (value.contacts[] with wa_id = From), if any
	// Meta is what a status carries besides its id, status, time and recipient
	// (conversation, pricing, errors), as a JSON object; nil when there is nothing.
	Meta []byte

	Reason string // why a KindInvalid item cannot be read
}

// Statuses Meta reports, in the order a message moves through them (failed is final).
const (
	StatusSent      = "sent"
	StatusDelivered = "delivered"
	StatusRead      = "read"
	StatusFailed    = "failed"
)

// maxIDLen bounds every id and short string the walker keeps; Meta's are far shorter.
const maxIDLen = 512

var parsers fastjson.ParserPool

// Walk calls visit once for every item of every change of every entry of body, in body
// order, each on its own: an item that cannot be read is reported as KindInvalid and the
// walk goes on. It returns an error wrapping ErrUnparsable only when the body as a whole
// is not a WhatsApp Business Account webhook; visit is not called then.
//
// Walk is linear in the size of body: jsonguard's check of its structure and depth
// (jsonguard.DefaultMaxDepth), one parse (fastjson), then one pass over the parsed values.
func Walk(body []byte, visit func(*Item)) error {
	if err := jsonguard.Check(body, jsonguard.DefaultMaxDepth); err != nil {
		return fmt.Errorf("%w: %w", ErrUnparsable, err)
	}
	p := parsers.Get()
	defer parsers.Put(p)
	root, err := p.ParseBytes(body)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnparsable, err)
	}
	if root.Type() != fastjson.TypeObject {
		return fmt.Errorf("%w: not a JSON object", ErrUnparsable)
	}
	if obj := root.Get("object"); obj == nil || string(obj.GetStringBytes()) != "whatsapp_business_account" {
		return fmt.Errorf("%w: object is not whatsapp_business_account", ErrUnparsable)
	}
	entries := root.Get("entry")
	if entries == nil || entries.Type() != fastjson.TypeArray {
		return fmt.Errorf("%w: no entry array", ErrUnparsable)
	}
	arr, _ := entries.Array()
	var it Item
	for ei, e := range arr {
		walkEntry(&it, ei, e, visit)
	}
	return nil
}

func invalid(it *Item, raw *fastjson.Value, reason string, visit func(*Item)) {
	it.Kind, it.Reason = KindInvalid, reason
	if raw != nil {
		it.Raw = raw.MarshalTo(nil)
	}
	visit(it)
}

func walkEntry(it *Item, ei int, e *fastjson.Value, visit func(*Item)) {
	*it = Item{Entry: ei, Change: -1, Index: -1}
	if e.Type() != fastjson.TypeObject {
		invalid(it, e, "entry is not an object", visit)
		return
	}
	waba, ok := shortString(e.Get("id"))
	if !ok {
		invalid(it, e, "entry has no id", visit)
		return
	}
	changes := e.Get("changes")
	if changes == nil || changes.Type() != fastjson.TypeArray {
		it.WABAID = waba
		invalid(it, e, "entry has no changes array", visit)
		return
	}
	arr, _ := changes.Array()
	for ci, c := range arr {
		*it = Item{Entry: ei, Change: ci, Index: -1, WABAID: waba}
		walkChange(it, c, visit)
	}
}

func walkChange(it *Item, c *fastjson.Value, visit func(*Item)) {
	if c.Type() != fastjson.TypeObject {
		invalid(it, c, "change is not an object", visit)
		return
	}
	field, ok := shortString(c.Get("field"))
	if !ok {
		invalid(it, c, "change has no field", visit)
		return
	}
	it.Field = field
	v := c.Get("value")
	if v == nil || v.Type() != fastjson.TypeObject {
		invalid(it, c, "change has no value object", visit)
		return
	}
	switch field {
	case "messages":
		walkMessages(it, v, visit)
	case "phone_number_quality_update":
		it.DisplayPhoneNumber, _ = shortString(v.Get("display_phone_number"))
		it.Event, _ = shortString(v.Get("event"))
		it.Limit, _ = shortString(v.Get("current_limit"))
		it.Kind, it.Raw = KindQuality, v.MarshalTo(nil)
		visit(it)
	default:
		it.Kind, it.Raw = KindOther, v.MarshalTo(nil)
		visit(it)
	}
}

// walkMessages reports every message, status and error of a "messages" change value.
func walkMessages(it *Item, v *fastjson.Value, visit func(*Item)) {
	base := *it
	md := v.Get("metadata")
	phone, ok := shortString(md.Get("phone_number_id"))
	if md != nil {
		base.DisplayPhoneNumber, _ = shortString(md.Get("display_phone_number"))
	}
	lists := [...]struct {
		name string
		kind Kind
	}{{"messages", KindMessage}, {"statuses", KindStatus}, {"errors", KindOther}}
	if !ok {
		// Without the business number no item can be placed with a tenant.
		for _, l := range lists {
			for i, x := range arrayOf(v.Get(l.name)) {
				*it = base
				it.Index = i
				invalid(it, x, "change has no metadata.phone_number_id", visit)
			}
		}
		return
	}
	base.PhoneNumberID = phone

	// Contacts by wa_id, so each message finds its sender's profile in one lookup.
	var contacts map[string]*fastjson.Value
	for _, c := range arrayOf(v.Get("contacts")) {
		if id, ok := shortString(c.Get("wa_id")); ok {
			if contacts == nil {
				contacts = map[string]*fastjson.Value{}
			}
			if _, dup := contacts[id]; !dup {
				contacts[id] = c
			}
		}
	}
	for _, l := range lists {
		x := v.Get(l.name)
		if x != nil && x.Type() != fastjson.TypeArray {
			*it = base
			invalid(it, x, "value."+l.name+" is not an array", visit)
			continue
		}
		for i, x := range arrayOf(x) {
			*it = base
			it.Index = i
			switch l.kind {
			case KindMessage:
				message(it, x, contacts, visit)
			case KindStatus:
				status(it, x, visit)
			default:
				it.Kind, it.Raw = KindOther, x.MarshalTo(nil)
				visit(it)
			}
		}
	}
}

func message(it *Item, x *fastjson.Value, contacts map[string]*fastjson.Value, visit func(*Item)) {
	if x.Type() != fastjson.TypeObject {
		invalid(it, x, "message is not an object", visit)
		return
	}
	var ok bool
	if it.ID, ok = shortString(x.Get("id")); !ok {
		invalid(it, x, "message has no id", visit)
		return
	}
	if it.From, ok = shortString(x.Get("from")); !ok {
		invalid(it, x, "message has no from", visit)
		return
	}
	if it.Type, ok = shortString(x.Get("type")); !ok {
		invalid(it, x, "message has no type", visit)
		return
	}
	if it.Timestamp, ok = timestamp(x.Get("timestamp")); !ok {
		invalid(it, x, "message has no valid timestamp", visit)
		return
	}
	if c := contacts[it.From]; c != nil {
		it.Contact = c.MarshalTo(nil)
	}
	it.Kind, it.Raw = KindMessage, x.MarshalTo(nil)
	visit(it)
}

func status(it *Item, x *fastjson.Value, visit func(*Item)) {
	if x.Type() != fastjson.TypeObject {
		invalid(it, x, "status is not an object", visit)
		return
	}
	var ok bool
	if it.ID, ok = shortString(x.Get("id")); !ok {
		invalid(it, x, "status has no id", visit)
		return
	}
	it.Status, _ = shortString(x.Get("status"))
	switch it.Status {
	case StatusSent, StatusDelivered, StatusRead, StatusFailed:
	default:
		invalid(it, x, "status is not sent, delivered, read or failed", visit)
		return
	}
	if it.Timestamp, ok = timestamp(x.Get("timestamp")); !ok {
		invalid(it, x, "status has no valid timestamp", visit)
		return
	}
	it.RecipientID, _ = shortString(x.Get("recipient_id"))
	errs := arrayOf(x.Get("errors"))
	if len(errs) > 0 {
		it.ErrorCode = errs[0].GetInt("code")
		it.ErrorTitle = string(errs[0].GetStringBytes("title"))
		if len(it.ErrorTitle) > maxIDLen {
			it.ErrorTitle = it.ErrorTitle[:maxIDLen]
		}
	}
	if it.Status == StatusFailed && it.ErrorCode == 0 && it.ErrorTitle == "" {
		it.ErrorTitle = "failed"
	}
	// What else Meta says about the status (conversation, pricing, errors), kept whole.
	var meta *fastjson.Arena
	var obj *fastjson.Value
	x.GetObject().Visit(func(k []byte, v *fastjson.Value) {
		switch string(k) {
		case "id", "status", "timestamp", "recipient_id":
			return
		}
		if meta == nil {
			meta = &fastjson.Arena{}
			obj = meta.NewObject()
		}
		obj.Set(string(k), v)
	})
	if obj != nil {
		it.Meta = obj.MarshalTo(nil)
	}
	it.Kind, it.Raw = KindStatus, x.MarshalTo(nil)
	visit(it)
}

// arrayOf returns v's elements, or none when v is not an array.
func arrayOf(v *fastjson.Value) []*fastjson.Value {
	if v == nil || v.Type() != fastjson.TypeArray {
		return nil
	}
	a, _ := v.Array()
	return a
}

// shortString returns a non-empty string of at most maxIDLen bytes; Meta sends some ids
// as numbers, which are taken as they are written.
func shortString(v *fastjson.Value) (string, bool) {
	if v == nil {
		return "", false
	}
	var s string
	switch v.Type() {
	case fastjson.TypeString:
		s = string(v.GetStringBytes())
	case fastjson.TypeNumber:
		s = string(v.MarshalTo(nil))
	default:
		return "", false
	}
	if s == "" || len(s) > maxIDLen {
		return "", false
	}
	return s, true
}

// timestamp reads Meta's Unix seconds, a string of digits or a number.
func timestamp(v *fastjson.Value) (time.Time, bool) {
	s, ok := shortString(v)
	if !ok || len(s) > 12 {
		return time.Time{}, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}, false
	}
	return time.Unix(n, 0).UTC(), true
}

// FirstWABAID returns entry[0].id of a body, or "" when it has none: the Kafka key of the
// body on wa.webhooks, so one WABA's updates stay in one partition.
func FirstWABAID(body []byte) string {
	if jsonguard.Check(body, jsonguard.DefaultMaxDepth) != nil {
		return ""
	}
	p := parsers.Get()
	defer parsers.Put(p)
	root, err := p.ParseBytes(body)
	if err != nil {
		return ""
	}
	e := arrayOf(root.Get("entry"))
	if len(e) == 0 {
		return ""
	}
	id, _ := shortString(e[0].Get("id"))
	return id
}
