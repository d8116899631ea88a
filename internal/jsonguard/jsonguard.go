// Package jsonguard checks outside JSON in one linear pass before any parser sees it:
// strict RFC 8259 syntax, valid UTF-8, and a bound on nesting depth. It exists because
// the parsers behind it are not linear on hostile input: fastjson's validator recurses
// without a depth limit and wraps its error message once per level, so a body of n
// unclosed '[' costs O(n²) time and memory; fastjson's parser stops at depth 300 but
// still wraps its error 600 times. Input that passes Check is valid JSON no deeper
// than the limit, so those parsers never take an error path on it.
//
// Check never allocates, uses no recursion, looks at each byte a bounded number of
// times, and returns one of two sentinel errors whose messages are of constant size.
package jsonguard

import (
	"errors"
	"unicode/utf8"
)

const (
	// DefaultMaxDepth is the nesting limit callers use when configuration gives none.
	DefaultMaxDepth = 64
	// MaxDepthLimit is the largest limit Check honours: below fastjson's own limit of
	// 300 nested values, so a checked document never reaches fastjson's depth error.
	MaxDepthLimit = 256
)

var (
	// ErrSyntax is returned for anything that is not one complete RFC 8259 JSON value
	// in valid UTF-8 (surrounding whitespace allowed).
	ErrSyntax = errors.New("invalid json")
	// ErrTooDeep is returned when arrays and objects nest deeper than the limit.
	ErrTooDeep = errors.New("json nested too deeply")
)

// Check reports whether b is one valid JSON value whose arrays and objects nest at
// most maxDepth deep ([] is depth 1, [[]] depth 2). maxDepth ≤ 0 means
// DefaultMaxDepth; a limit above MaxDepthLimit is treated as MaxDepthLimit. The
// result is nil, ErrSyntax or ErrTooDeep; a document both too deep and malformed
// further on is ErrTooDeep, since the scan stops at the first problem.
func Check(b []byte, maxDepth int) error {
	_, err := scan(b, maxDepth)
	return err
}

// Depth clamps a configured limit the way Check does.
func Depth(maxDepth int) int {
	switch {
	case maxDepth <= 0:
		return DefaultMaxDepth
	case maxDepth > MaxDepthLimit:
		return MaxDepthLimit
	}
	return maxDepth
}

// What the scanner expects next.
const (
	expectValue        = iota // a value: at the top, after ':' and after ',' in an array
	expectValueOrClose        // after '[': a value or ']'
	expectKeyOrClose          // after '{': a key or '}'
	expectKey                 // after ',' in an object
	expectComma               // after a value: ',', the container's close, or the end
)

// scan is Check that also returns its steps: the iterations of every loop. Every step
// but the last consumes at least one byte no other step consumed, so steps ≤ len(b)+1;
// the tests hold it to that.
func scan(b []byte, maxDepth int) (steps int, err error) {
	maxDepth = Depth(maxDepth)
	// One bit per open container: 1 for an object, 0 for an array.
	var kinds [MaxDepthLimit / 64]uint64
	depth := 0
	state := expectValue
	i, n := 0, len(b)
	for {
		steps++
		for i < n && isSpace(b[i]) {
			i++
			steps++
		}
		if i == n {
			if state == expectComma && depth == 0 {
				return steps, nil
			}
			return steps, ErrSyntax
		}
		c := b[i]
		switch state {
		case expectComma:
			if depth == 0 {
				return steps, ErrSyntax // data after the value
			}
			inObject := kinds[(depth-1)>>6]&(1<<((depth-1)&63)) != 0
			switch {
			case c == ',' && inObject:
				state = expectKey
			case c == ',':
				state = expectValue
			case c == '}' && inObject, c == ']' && !inObject:
				depth--
			default:
				return steps, ErrSyntax
			}
			i++
		case expectKeyOrClose, expectKey:
			if c == '}' && state == expectKeyOrClose {
				depth--
				state = expectComma
				i++
				continue
			}
			if c != '"' {
				return steps, ErrSyntax
			}
			var s int
			if i, s, err = scanString(b, i+1); err != nil {
				return steps + s, err
			}
			steps += s
			for i < n && isSpace(b[i]) {
				i++
				steps++
			}
			if i == n || b[i] != ':' {
				return steps, ErrSyntax
			}
			i++
			state = expectValue
		default: // expectValue, expectValueOrClose
			switch c {
			case ']':
				if state != expectValueOrClose {
					return steps, ErrSyntax
				}
				depth--
				state = expectComma
				i++
			case '[', '{':
				if depth >= maxDepth {
					return steps, ErrTooDeep
				}
				word, bit := depth>>6, uint64(1)<<(depth&63)
				if c == '{' {
					kinds[word] |= bit
					state = expectKeyOrClose
				} else {
					kinds[word] &^= bit
					state = expectValueOrClose
				}
				depth++
				i++
			case '"':
				var s int
				if i, s, err = scanString(b, i+1); err != nil {
					return steps + s, err
				}
				steps += s
				state = expectComma
			case 't':
				if i, err = literal(b, i, "true"); err != nil {
					return steps, err
				}
				state = expectComma
			case 'f':
				if i, err = literal(b, i, "false"); err != nil {
					return steps, err
				}
				state = expectComma
			case 'n':
				if i, err = literal(b, i, "null"); err != nil {
					return steps, err
				}
				state = expectComma
			default:
				var s int
				if i, s, err = scanNumber(b, i); err != nil {
					return steps + s, err
				}
				steps += s
				state = expectComma
			}
		}
	}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// literal checks that b[i:] starts with word and returns the index after it.
func literal(b []byte, i int, word string) (int, error) {
	if len(b)-i < len(word) || string(b[i:i+len(word)]) != word {
		return i, ErrSyntax
	}
	return i + len(word), nil
}

// plain marks the bytes a string holds as themselves: printable ASCII but '"' and '\\'.
var plain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// scanString checks a string whose opening quote is before b[i] and returns the index
// after its closing quote and the steps taken (one per byte of a run of plain bytes,
// one per other iteration, each of which consumes at least one byte).
func scanString(b []byte, i int) (next, steps int, err error) {
	n := len(b)
	for i < n {
		start := i
		for i < n && plain[b[i]] {
			i++
		}
		steps += i - start
		if i == n {
			break
		}
		steps++
		switch c := b[i]; {
		case c == '"':
			return i + 1, steps, nil
		case c == '\\':
			if i+1 == n {
				return i, steps, ErrSyntax
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if n-i < 6 || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return i, steps, ErrSyntax
				}
				i += 6
			default:
				return i, steps, ErrSyntax
			}
		case c < 0x20:
			return i, steps, ErrSyntax
		default:
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size == 1 {
				return i, steps, ErrSyntax
			}
			i += size
		}
	}
	return i, steps, ErrSyntax
}

// scanNumber checks the number at b[i] (-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?)
// and returns the index after it and the steps taken.
func scanNumber(b []byte, i int) (next, steps int, err error) {
	n := len(b)
	if i < n && b[i] == '-' {
		i++
	}
	switch {
	case i == n:
		return i, steps, ErrSyntax
	case b[i] == '0':
		i++
	case b[i] >= '1' && b[i] <= '9':
		i++
		for i < n && isDigit(b[i]) {
			i++
			steps++
		}
	default:
		return i, steps, ErrSyntax
	}
	if i < n && b[i] == '.' {
		i++
		if i == n || !isDigit(b[i]) {
			return i, steps, ErrSyntax
		}
		for i < n && isDigit(b[i]) {
			i++
			steps++
		}
	}
	if i < n && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < n && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i == n || !isDigit(b[i]) {
			return i, steps, ErrSyntax
		}
		for i < n && isDigit(b[i]) {
			i++
			steps++
		}
	}
	return i, steps, nil
}
