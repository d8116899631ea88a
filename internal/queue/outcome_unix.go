//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package queue

import (
	"errors"
	"io"
	"net"
	"syscall"
)

// peerClosed reports, without blocking and without consuming anything, whether the
// other end closed or reset c: io.EOF, the socket error, or nil while it is open (or when
// c is not a socket).
func peerClosed(c net.Conn) error {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	var perr error
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, rerr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case errors.Is(rerr, syscall.EAGAIN), errors.Is(rerr, syscall.EWOULDBLOCK), errors.Is(rerr, syscall.EINTR):
		case rerr != nil:
			perr = rerr
		case n == 0:
			perr = io.EOF
		}
		return true // one look, never wait
	})
	if perr != nil {
		return perr
	}
	// A read deadline that already passed: the write would fail the same way.
	return err
}
