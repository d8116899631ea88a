package media

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"strings"
	"sync"
)

// Errors of an upload; the gateway answers each with its own stable code.
var (
	// ErrNotMultipart: the body is not multipart/form-data with a boundary.
	ErrNotMultipart = errors.New("media upload must be multipart/form-data with a boundary")
	// ErrMalformed: the multipart body is broken, or has too many parts or too large a
	// form field.
	ErrMalformed = errors.New("malformed multipart media upload")
	// ErrAccessToken: the body carries an access_token field: aerogate supplies the
	// token.
	ErrAccessToken = errors.New("media upload carries an access_token field")
	// ErrTooLarge: the file (or the whole body) is over its limit. A *TooLargeError
	// says which.
	ErrTooLarge = errors.New("media upload too large")
	// errAborted ends the check of an upload that was abandoned before its end.
	errAborted = errors.New("media upload abandoned")
)

// TooLargeError is an upload over a limit; it wraps ErrTooLarge.
type TooLargeError struct {
	Kind  Kind  // the file's kind; "" when the whole body is over MaxBytes
	Limit int64 // bytes
}

func (e *TooLargeError) Error() string {
	if e.Kind == "" {
		return fmt.Sprintf("media upload body over %d bytes", e.Limit)
	}
	return fmt.Sprintf("%s file over WhatsApp's %d-byte limit", e.Kind, e.Limit)
}

func (e *TooLargeError) Unwrap() error { return ErrTooLarge }

const (
	maxParts      = 16        // messaging_product, type, file and a few more
	maxFieldBytes = 4 << 10   // any form field but the file
	overheadBytes = 256 << 10 // multipart framing and fields on top of the file
	chunkBytes    = 32 << 10  // read from the body at once
)

// Upload checks a multipart/form-data media upload while its bytes stream through it
// unchanged: Read returns the body's bytes as they are, and fails instead of returning
// the last of them when the body carries an access_token field, is malformed, or its
// file is over the limit of its kind (WhatsApp's, KindOf the file part's Content-Type
// or of the "type" field) or over maxBytes. A reader sending the body on (the request
// to Meta) thus never sends a complete body that fails a check.
//
// The check is stdlib's mime/multipart reader running on a copy of the stream in its own
// goroutine, which sees every byte before Read returns it: memory stays a few buffers
// whatever the file's size. Close must be called when the upload is done with.
type Upload struct {
	src      io.Reader
	declared int64 // Content-Length, or -1
	maxBody  int64
	pw       *io.PipeWriter

	read    int64
	buf     []byte // backing array of held
	held    []byte // read and checked, not yet returned
	lastLen int    // the latest chunk, at held's end: returned only once more follows
	ended   bool
	err     error // the verdict, once failed

	done    chan struct{}
	verdict error // the parser's; read after done is closed
	once    sync.Once

	kind      Kind
	fileBytes int64
}

// NewUpload starts checking body, whose Content-Type is contentType and Content-Length
// contentLength (-1 when unknown), for a file of at most maxBytes.
func NewUpload(body io.Reader, contentType string, contentLength, maxBytes int64) (*Upload, error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return nil, ErrNotMultipart
	}
	u := &Upload{src: body, declared: contentLength, maxBody: maxBytes + overheadBytes, done: make(chan struct{})}
	if contentLength > u.maxBody {
		return nil, &TooLargeError{Limit: maxBytes}
	}
	pr, pw := io.Pipe()
	u.pw = pw
	go u.check(pr, params["boundary"], maxBytes)
	return u, nil
}

// check parses the copy of the stream and leaves its verdict in u.verdict.
func (u *Upload) check(pr *io.PipeReader, boundary string, maxBytes int64) {
	defer close(u.done)
	err := u.parse(multipart.NewReader(pr, boundary), maxBytes)
	if err != nil {
		u.verdict = err
		_ = pr.CloseWithError(err)
		return
	}
	// Past the closing boundary: the epilogue is read and ignored (Read bounds it).
	if _, err := io.Copy(io.Discard, pr); err != nil && !errors.Is(err, errAborted) {
		u.verdict = fmt.Errorf("%w: %w", ErrMalformed, err)
	}
}

func (u *Upload) parse(mr *multipart.Reader, maxBytes int64) error {
	var typeField string
	fileKind := Kind("")
	files := 0
	for n := 0; ; n++ {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if errors.Is(err, errAborted) {
				return err
			}
			return fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		if n >= maxParts {
			return fmt.Errorf("%w: more than %d parts", ErrMalformed, maxParts)
		}
		name := p.FormName()
		switch {
		case strings.EqualFold(name, "access_token"):
			return ErrAccessToken
		case name == "file":
			files++
			if files > 1 {
				return fmt.Errorf("%w: more than one file part", ErrMalformed)
			}
			limit := maxBytes
			if ct := p.Header.Get("Content-Type"); ct != "" {
				fileKind = KindOf(ct)
			}
			if typeField != "" {
				fileKind = KindOf(typeField)
			}
			if fileKind != "" {
				limit = min(limit, fileKind.Limit())
			}
			got, err := io.Copy(io.Discard, io.LimitReader(p, limit+1))
			u.fileBytes = got
			if err != nil {
				return partError(err)
			}
			if got > limit {
				return u.tooLarge(fileKind, limit, maxBytes)
			}
			// Whatever is left of the part is past the limit: read it to know.
			if extra, err := io.Copy(io.Discard, p); err != nil || extra > 0 {
				if err != nil {
					return partError(err)
				}
				return u.tooLarge(fileKind, limit, maxBytes)
			}
		default:
			v, err := io.ReadAll(io.LimitReader(p, maxFieldBytes+1))
			if err != nil {
				return partError(err)
			}
			if len(v) > maxFieldBytes {
				return fmt.Errorf("%w: form field %q over %d bytes", ErrMalformed, name, maxFieldBytes)
			}
			if name == "type" {
				typeField = string(v)
				if files > 0 {
					// The type came after the file: its limit applies now.
					k := KindOf(typeField)
					if lim := min(maxBytes, k.Limit()); u.fileBytes > lim {
						return u.tooLarge(k, lim, maxBytes)
					}
					fileKind = k
				}
			}
		}
	}
	u.kind = fileKind
	return nil
}

func (u *Upload) tooLarge(k Kind, limit, maxBytes int64) error {
	if k == "" || limit == maxBytes {
		return &TooLargeError{Limit: maxBytes}
	}
	return &TooLargeError{Kind: k, Limit: limit}
}

func partError(err error) error {
	if errors.Is(err, errAborted) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrMalformed, err)
}

// Read reads the body through the check. Once the body ends (EOF, or Content-Length
// bytes), its last bytes are returned only if every check passed; otherwise Read returns
// the check's error. Without a Content-Length the end is known only at EOF, so the
// latest chunk read is held back until the next one arrives.
func (u *Upload) Read(p []byte) (int, error) {
	for {
		if u.err != nil {
			return 0, u.err
		}
		ready := len(u.held) - u.lastLen
		if u.ended {
			ready = len(u.held)
		}
		if ready > 0 {
			n := copy(p, u.held[:ready])
			u.held = u.held[n:]
			return n, nil
		}
		if u.ended {
			return 0, io.EOF
		}
		if err := u.fill(); err != nil {
			return 0, u.fail(err)
		}
	}
}

// fill reads the next chunk of the body through the check into held, and at the end
// waits for the verdict.
func (u *Upload) fill() error {
	if len(u.held) == 0 {
		u.held = u.buf[:0]
	} else if cap(u.held) < len(u.held)+chunkBytes {
		u.held = append(u.buf[:0], u.held...)
	}
	if u.buf == nil {
		u.buf = make([]byte, 0, 2*chunkBytes)
		u.held = append(u.buf[:0], u.held...)
	}
	want := int64(chunkBytes)
	if u.declared >= 0 {
		// Never read past the declared length: what follows is not this body's.
		want = min(want, u.declared-u.read)
	}
	chunk := u.held[len(u.held) : len(u.held)+int(want)]
	n, err := u.src.Read(chunk)
	if n > 0 {
		u.read += int64(n)
		if u.read > u.maxBody {
			return &TooLargeError{Limit: u.maxBody - overheadBytes}
		}
		if _, werr := u.pw.Write(chunk[:n]); werr != nil {
			return werr
		}
		u.held = u.held[:len(u.held)+n]
		u.lastLen = n
	}
	end := errors.Is(err, io.EOF) || (u.declared >= 0 && u.read >= u.declared)
	switch {
	case end:
		if u.declared >= 0 && u.read < u.declared {
			return fmt.Errorf("%w: body ended after %d of %d bytes", ErrMalformed, u.read, u.declared)
		}
		_ = u.pw.Close()
		<-u.done
		if u.verdict != nil {
			return u.verdict
		}
		u.ended = true
	case err != nil:
		return err
	}
	return nil
}

// fail ends the check with err, or with the parser's own verdict when it has one.
func (u *Upload) fail(err error) error {
	_ = u.pw.CloseWithError(errAborted)
	<-u.done
	if u.verdict != nil && !errors.Is(u.verdict, errAborted) {
		err = u.verdict
	}
	u.err = err
	return err
}

// Close stops the check; it is safe to call more than once and after the end.
func (u *Upload) Close() error {
	u.once.Do(func() {
		_ = u.pw.CloseWithError(errAborted)
		<-u.done
	})
	return nil
}

// Err is the error that ended the upload's Read, or nil.
func (u *Upload) Err() error { return u.err }

// Kind is the file's kind once the upload ended well ("" when it had no Content-Type
// and no type field).
func (u *Upload) Kind() Kind { return u.kind }

// FileBytes is the size of the file part read so far.
func (u *Upload) FileBytes() int64 { return u.fileBytes }
