package gateway

import (
	"errors"
	"io"

	"github.com/aerostic/aerogate/internal/tenantfield"
)

// scanError is how a scanningReader stops an upload: the client's answer.
type scanError struct{ apiErr *apiError }

func (e *scanError) Error() string { return "request body refused: " + e.apiErr.code }

var errScanStopped = errors.New("body scan stopped")

// scanningReader streams a multipart body to the upstream while a tenantfield scan
// reads the same bytes. It always holds the last byte read back until the client's
// body has ended and the scan passed it, so the upstream never receives a complete
// body that carries another tenant's id: a refused upload ends short, and the
// upstream sees an aborted request.
type scanningReader struct {
	src     io.Reader
	pw      *io.PipeWriter
	done    chan error
	buf     [32 << 10]byte
	out     [32<<10 + 1]byte
	ready   []byte
	held    byte
	hasHeld bool
	err     error
	refused *apiError
}

func newScanningReader(src io.Reader, names tenantfield.Names, boundary, tenant string) *scanningReader {
	pr, pw := io.Pipe()
	s := &scanningReader{src: src, pw: pw, done: make(chan error, 1)}
	go func() {
		err := names.Multipart(pr, boundary, tenant)
		if err == nil {
			_, _ = io.Copy(io.Discard, pr) // the epilogue, if any
		}
		_ = pr.CloseWithError(errScanStopped)
		s.done <- err
	}()
	return s
}

func (s *scanningReader) Read(p []byte) (int, error) {
	for {
		if len(s.ready) > 0 {
			n := copy(p, s.ready)
			s.ready = s.ready[n:]
			return n, nil
		}
		if s.err != nil {
			return 0, s.err
		}
		n, rerr := s.src.Read(s.buf[:])
		chunk := s.buf[:n]
		if n > 0 {
			if _, werr := s.pw.Write(chunk); werr != nil {
				return 0, s.verdict(werr)
			}
		}
		switch {
		case errors.Is(rerr, io.EOF):
			_ = s.pw.Close()
			if err := s.verdict(nil); err != nil {
				return 0, err
			}
			out := s.out[:0]
			if s.hasHeld {
				out = append(out, s.held)
			}
			s.ready, s.hasHeld, s.err = append(out, chunk...), false, io.EOF
		case rerr != nil:
			_ = s.pw.CloseWithError(rerr)
			s.err = rerr
			return 0, rerr
		case n > 0:
			out := s.out[:0]
			if s.hasHeld {
				out = append(out, s.held)
			}
			s.ready = append(out, chunk[:n-1]...)
			s.held, s.hasHeld = chunk[n-1], true
		}
	}
}

// verdict waits for the scan's result; a refusal becomes the reader's error.
func (s *scanningReader) verdict(ioErr error) error {
	err := <-s.done
	s.done <- err // keep it for stop and later calls
	if err == nil {
		if ioErr != nil {
			s.err = ioErr
		}
		return ioErr
	}
	s.refused = tenantError(err)
	s.err = &scanError{apiErr: s.refused}
	return s.err
}

// stop ends the scan if the upload did not reach its end.
func (s *scanningReader) stop() { _ = s.pw.CloseWithError(errScanStopped) }
