// Package whatsapp holds the WhatsApp Cloud API's value rules, once: phone number ids,
// WhatsApp Business Account ids, Graph API versions, recipients, throughput and text
// bodies. Every package that takes one of these values from outside (the gateway, the
// Graph client, the account repository, the CLI, configuration) parses it here, so a
// value refused by one is refused by all, with the same sentinel error.
//
// Every parser runs in time linear in its input and allocates nothing on failure.
package whatsapp

import (
	"errors"
	"strconv"
	"unicode/utf8"
)

// Sentinel errors, one per kind of value. Each error a parser returns wraps exactly one
// of them; callers branch with errors.Is.
var (
	ErrPhoneNumberID = errors.New("invalid phone number id")
	ErrWABAID        = errors.New("invalid WhatsApp Business Account id")
	ErrGraphVersion  = errors.New("invalid Graph API version")
	ErrRecipient     = errors.New("invalid recipient")
	ErrThroughput    = errors.New("invalid throughput")
	ErrTextBody      = errors.New("invalid text body")
)

// wrapped is a sentinel error with a fixed explanation: prebuilt, so refusing a value
// costs no allocation (a gateway refuses garbage at line rate).
type wrapped struct {
	sentinel error
	msg      string
}

func (e *wrapped) Error() string { return e.sentinel.Error() + ": " + e.msg }
func (e *wrapped) Unwrap() error { return e.sentinel }

func wrap(sentinel error, msg string) error { return &wrapped{sentinel, msg} }

// MaxIDDigits bounds phone number ids and WABA ids. Meta's ids are 15 to 17 digits
// today; the bound leaves room and keeps garbage out of paths and keys.
const MaxIDDigits = 32

var (
	errPhoneNumberIDEmpty  = wrap(ErrPhoneNumberID, "empty")
	errPhoneNumberIDLong   = wrap(ErrPhoneNumberID, "longer than "+strconv.Itoa(MaxIDDigits)+" digits")
	errPhoneNumberIDDigits = wrap(ErrPhoneNumberID, "want digits only, as Meta issues them")
	errWABAIDEmpty         = wrap(ErrWABAID, "empty")
	errWABAIDLong          = wrap(ErrWABAID, "longer than "+strconv.Itoa(MaxIDDigits)+" digits")
	errWABAIDDigits        = wrap(ErrWABAID, "want digits only, as Meta issues them")
)

// checkID accepts 1 to MaxIDDigits ASCII digits.
func checkID[T string | []byte](s T, empty, long, notDigits error) error {
	if len(s) == 0 {
		return empty
	}
	if len(s) > MaxIDDigits {
		return long
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return notDigits
		}
	}
	return nil
}

// ValidObjectID reports whether b is a Graph object id of the kind WhatsApp uses (phone
// numbers, WABAs, media): 1 to MaxIDDigits ASCII digits, the rule every id parse here
// applies.
func ValidObjectID(b []byte) bool {
	return checkID(b, errAny, errAny, errAny) == nil
}

var errAny = errors.New("not a graph object id")

// PhoneNumberID is a WhatsApp business phone number's Graph object id, such as
// 106540352242922: the {phone_number_id} of /{version}/{phone_number_id}/messages.
type PhoneNumberID string

// ParsePhoneNumberID accepts 1 to MaxIDDigits ASCII digits. Meta issues nothing else, so
// an id such as "dev-1" could never name a number Meta sends from.
func ParsePhoneNumberID(s string) (PhoneNumberID, error) {
	if err := CheckPhoneNumberID(s); err != nil {
		return "", err
	}
	return PhoneNumberID(s), nil
}

// CheckPhoneNumberID is ParsePhoneNumberID's check, for bytes that are not kept.
func CheckPhoneNumberID[T string | []byte](s T) error {
	return checkID(s, errPhoneNumberIDEmpty, errPhoneNumberIDLong, errPhoneNumberIDDigits)
}

// WABAID is a WhatsApp Business Account id, such as 102290129340398.
type WABAID string

// ParseWABAID accepts 1 to MaxIDDigits ASCII digits.
func ParseWABAID(s string) (WABAID, error) {
	if err := CheckWABAID(s); err != nil {
		return "", err
	}
	return WABAID(s), nil
}

// CheckWABAID is ParseWABAID's check, for bytes that are not kept.
func CheckWABAID[T string | []byte](s T) error {
	return checkID(s, errWABAIDEmpty, errWABAIDLong, errWABAIDDigits)
}

// GraphVersion is a Graph API version such as v22.0.
type GraphVersion string

var errGraphVersion = wrap(ErrGraphVersion, "want vMAJOR.MINOR such as v22.0")

// ParseGraphVersion accepts "v", 1 to 3 digits, ".", 1 to 3 digits: Meta's versions
// (v2.0 … v24.0) and the ones to come. "v22" without a minor version is refused: Graph
// does not route it.
func ParseGraphVersion(s string) (GraphVersion, error) {
	if err := CheckGraphVersion(s); err != nil {
		return "", err
	}
	return GraphVersion(s), nil
}

// CheckGraphVersion is ParseGraphVersion's check, for bytes that are not kept.
func CheckGraphVersion[T string | []byte](s T) error {
	if len(s) < 4 || len(s) > 8 || s[0] != 'v' {
		return errGraphVersion
	}
	major, minor, dot := 0, 0, false
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			if dot {
				minor++
			} else {
				major++
			}
		case c == '.' && !dot:
			dot = true
		default:
			return errGraphVersion
		}
	}
	if !dot || major < 1 || major > 3 || minor < 1 || minor > 3 {
		return errGraphVersion
	}
	return nil
}

// Recipient bounds. E.164 numbers have at most 15 digits (country code included); the
// shortest numbers in service anywhere have 7 (a 3-digit country code and a 4-digit
// subscriber number, as in Niue or Saint Helena).
const (
	MinRecipientDigits = 7
	MaxRecipientDigits = 15
	// MaxRecipientInput bounds the whole `to` as sent, separators included.
	MaxRecipientInput = 64
)

// Recipient is a WhatsApp user's phone number normalized to digits: the wa_id Meta
// answers with, such as 919876543210.
type Recipient string

var (
	errRecipientEmpty     = wrap(ErrRecipient, "empty")
	errRecipientLong      = wrap(ErrRecipient, "longer than "+strconv.Itoa(MaxRecipientInput)+" characters")
	errRecipientChar      = wrap(ErrRecipient, "want digits with an optional leading +, spaces, hyphens and parentheses")
	errRecipientPlus      = wrap(ErrRecipient, "+ is allowed only as the first character")
	errRecipientFewDigits = wrap(ErrRecipient, "fewer than "+strconv.Itoa(MinRecipientDigits)+" digits")
	errRecipientDigits    = wrap(ErrRecipient, "more than "+strconv.Itoa(MaxRecipientDigits)+" digits (E.164 numbers have at most 15)")
)

// ParseRecipient normalizes a `to` as the Cloud API accepts it — a phone number with
// its country code, digits with an optional leading '+' and any spaces, hyphens and
// parentheses, such as "+91 98765 43210" or "+1 (650) 555-1234" — to its digits.
func ParseRecipient(s string) (Recipient, error) {
	var buf [MaxRecipientDigits]byte
	b, err := AppendRecipient(buf[:0], s)
	if err != nil {
		return "", err
	}
	return Recipient(b), nil
}

// AppendRecipient appends the digits of the recipient input to dst (see ParseRecipient)
// and returns the extended slice. On error dst is returned unchanged, and nothing is
// appended, so a dst with room for MaxRecipientDigits never grows.
func AppendRecipient[T string | []byte](dst []byte, input T) ([]byte, error) {
	if len(input) == 0 {
		return dst, errRecipientEmpty
	}
	if len(input) > MaxRecipientInput {
		return dst, errRecipientLong
	}
	n := 0
	for i := 0; i < len(input); i++ {
		switch c := input[i]; c {
		case '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
			n++
		case ' ', '-', '(', ')':
		case '+':
			if i != 0 {
				return dst, errRecipientPlus
			}
		default:
			return dst, errRecipientChar
		}
	}
	switch {
	case n < MinRecipientDigits:
		return dst, errRecipientFewDigits
	case n > MaxRecipientDigits:
		return dst, errRecipientDigits
	}
	for i := 0; i < len(input); i++ {
		if c := input[i]; c >= '0' && c <= '9' {
			dst = append(dst, c)
		}
	}
	return dst, nil
}

// Throughput is the messages per second Meta lets one business phone number send.
type Throughput int

// Meta's throughput: every number starts at 80 messages per second and may be raised
// to at most 1,000.
const (
	DefaultThroughput Throughput = 80
	MaxThroughput     Throughput = 1000
)

var errThroughput = wrap(ErrThroughput, "want 1 to "+strconv.Itoa(int(MaxThroughput))+" messages per second")

// ParseThroughput accepts 1 to MaxThroughput messages per second. A value below Meta's
// default is allowed: an operator may pace a number slower than Meta would.
func ParseThroughput(mps int) (Throughput, error) {
	if mps < 1 || mps > int(MaxThroughput) {
		return 0, errThroughput
	}
	return Throughput(mps), nil
}

// MaxTextBody is the longest text message body Meta accepts, in characters.
const MaxTextBody = 4096

var (
	errTextBodyEmpty = wrap(ErrTextBody, "empty")
	errTextBodyLong  = wrap(ErrTextBody, "longer than "+strconv.Itoa(MaxTextBody)+" characters")
)

// CheckTextBody accepts a text message body (text.body, JSON escapes already decoded)
// of 1 to MaxTextBody characters. Meta documents the limit in characters without saying
// how it counts them; this counts Unicode code points, what a reader calls characters
// (an emoji such as 👍 is one, though it is two UTF-16 units and four UTF-8 bytes).
func CheckTextBody(body []byte) error {
	switch {
	case len(body) == 0:
		return errTextBodyEmpty
	case len(body) <= MaxTextBody:
		// No more bytes than the limit: no more characters either.
		return nil
	case utf8.RuneCount(body) > MaxTextBody:
		return errTextBodyLong
	}
	return nil
}
