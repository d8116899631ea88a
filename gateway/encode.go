package gateway

import (
	"crypto/rand"
	"crypto/sha1"
	"encoding/binary"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD so the
// output always stays valid JSON.
func appendJSONString[T string | []byte](dst []byte, s T) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
			if r != utf8.RuneError || size != 1 {
				i += size
				continue
			}
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		i++
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendUUID appends the canonical 36-character form of id.
func appendUUID(dst []byte, id uuid.UUID) []byte {
	for i, b := range id {
		switch i {
		case 4, 6, 8, 10:
			dst = append(dst, '-')
		}
		dst = append(dst, hexDigits[b>>4], hexDigits[b&0xf])
	}
	return dst
}

// idempotencyNamespace is the fixed namespace of the version 5 UUIDs derived from a
// tenant's Idempotency-Key. Changing it would change every derived message id.
var idempotencyNamespace = uuid.MustParse("3f0d8c1e-6a59-4c1b-9b7e-2f4a1d6c8e90")

// idempotentID derives the message id from (tenant, key): the same pair always yields
// the same id, and another tenant's identical key yields another id. The tenant is
// length-prefixed so no (tenant, key) split of the same bytes collides. It equals
// uuid.NewSHA1(idempotencyNamespace, data) without the hasher allocation.
func idempotentID(buf []byte, tenant string, key []byte) uuid.UUID {
	buf = append(buf[:0], idempotencyNamespace[:]...)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(tenant)))
	buf = append(buf, tenant...)
	buf = append(buf, key...)
	sum := sha1.Sum(buf)
	var id uuid.UUID
	copy(id[:], sum[:])
	id[6] = (id[6] & 0x0f) | 0x50 // version 5
	id[8] = (id[8] & 0x3f) | 0x80 // RFC 4122 variant
	return id
}

// idempotencyData is the name-based input idempotentID hashes after the namespace; tests
// use it to check idempotentID against uuid.NewSHA1.
func idempotencyData(tenant string, key []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(tenant)))
	b = append(b, tenant...)
	return append(b, key...)
}

// randomID returns a version 4 UUID from crypto/rand.
func randomID() uuid.UUID {
	var id uuid.UUID
	_, _ = rand.Read(id[:]) // crypto/rand.Read never returns an error (Go ≥ 1.24)
	id[6] = (id[6] & 0x0f) | 0x40
	id[8] = (id[8] & 0x3f) | 0x80
	return id
}

// timeOrderedID returns a version 7 UUID (RFC 9562): milliseconds since the epoch, then
// 74 random bits. Ids that grow with time land at the right edge of the messages
// primary key instead of on random pages, which keeps inserts cheap as the table grows.
func timeOrderedID(now time.Time) uuid.UUID {
	var id uuid.UUID
	_, _ = rand.Read(id[6:])
	ms := uint64(now.UnixMilli())
	id[0], id[1], id[2], id[3], id[4], id[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	id[6] = (id[6] & 0x0f) | 0x70
	id[8] = (id[8] & 0x3f) | 0x80
	return id
}
