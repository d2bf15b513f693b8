// Package tlsterm terminates TLS for vigil's listeners, with crypto/tls:
// a Terminator runs one server handshake within a timeout, refuses clients
// that do not offer a required ALPN protocol (h2 for gRPC), and reports
// every handshake's outcome as a Result from a small fixed set, for
// metrics. Listen wraps a net.Listener so that its Accept hands out
// *tls.Conn whose handshake is complete: the data paths (grpcproxy,
// tcpproxy) serve them as they serve plaintext connections.
//
// The tls.Config of each handshake comes from Options.Config at the time
// the handshake starts, so certificates can be replaced at any moment
// (tlsconf does, when files change): established connections keep the
// certificate they were made with, the next handshake gets the new one.
// Session tickets stay valid across such replacements. SetOptions changes
// the timeout or the configuration source in place.
//
// Goroutines: a Listener owns one accept goroutine and one per handshake in
// flight; Close closes the connections still handshaking and waits for all
// of them. Handshake itself starts none.
package tlsterm

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultHandshakeTimeout is the time a client gets to finish its
// handshake when Options.HandshakeTimeout is zero: what the grpc listener
// gives a plaintext client for its HTTP/2 preface.
const DefaultHandshakeTimeout = 10 * time.Second

// Result is how a handshake ended, a label value for metrics.
type Result string

// Handshake results.
const (
	ResultOK Result = "ok"
	// ResultTimeout: the client did not finish within the timeout
	// (a half-finished handshake, a client that connects and waits).
	ResultTimeout Result = "timeout"
	// ResultVersion: no TLS version in common (the client's highest is
	// below min_version).
	ResultVersion Result = "version"
	// ResultALPN: the client did not offer the required protocol (h2).
	ResultALPN Result = "alpn"
	// ResultClientCert: mTLS refused the client: no certificate, or one
	// that does not verify against the client CA.
	ResultClientCert Result = "client_cert"
	// ResultNotTLS: the client's first bytes were not a TLS record
	// (plaintext, such as h2c or HTTP/1.1, sent to a TLS port).
	ResultNotTLS Result = "not_tls"
	// ResultClosed: the client closed or reset the connection during the
	// handshake.
	ResultClosed Result = "closed"
	// ResultOverLimit: Options.MaxHandshakes were in flight; the
	// connection was closed at once.
	ResultOverLimit Result = "over_limit"
	// ResultError: any other failure (a malformed handshake, a client
	// that refused vigil's certificate, ...).
	ResultError Result = "error"
)

// Results lists every Result, in a fixed order.
var Results = []Result{ResultOK, ResultTimeout, ResultVersion, ResultALPN, ResultClientCert, ResultNotTLS, ResultClosed, ResultOverLimit, ResultError}

// Options configure a Terminator.
type Options struct {
	// Config returns the configuration for the next handshake. It is
	// called once per handshake and must be cheap (an atomic load); the
	// Config it returns must not be modified afterwards. Its
	// GetConfigForClient must be nil (the Terminator sets its own).
	Config func() *tls.Config
	// HandshakeTimeout bounds a handshake; zero means
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// RequireALPN, when set, is the one application protocol the
	// listener speaks ("h2"): a client that does not offer it is refused.
	// The Config's NextProtos should be this protocol alone.
	RequireALPN string
	// EchoALPN, without RequireALPN, accepts the first application
	// protocol the client offers, whatever it is: a tcp listener forwards
	// the bytes to a backend that speaks what the client speaks, and
	// clients such as grpc-go insist on a negotiated protocol.
	EchoALPN bool
	// MaxHandshakes bounds the handshakes a Listener runs at once; beyond
	// it a new connection is closed at once. Zero is no bound.
	MaxHandshakes int
	// OnHandshake, if set, is told every handshake's result and error
	// (nil for ResultOK). It runs on the handshake's goroutine: keep it
	// cheap.
	OnHandshake func(r Result, err error)
}

// Terminator runs server handshakes. It is safe for concurrent use.
type Terminator struct {
	opts atomic.Pointer[Options]
	// base is the config every handshake starts from; its
	// GetConfigForClient hands over the configuration of the handshake.
	base *tls.Config
}

// New returns a Terminator.
func New(opts Options) *Terminator {
	t := &Terminator{}
	t.SetOptions(opts)
	t.base = &tls.Config{GetConfigForClient: configForClient}
	return t
}

// SetOptions replaces the options; handshakes in flight keep theirs.
func (t *Terminator) SetOptions(opts Options) {
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = DefaultHandshakeTimeout
	}
	t.opts.Store(&opts)
}

// Error is a failed handshake.
type Error struct {
	Result Result
	Err    error
}

func (e *Error) Error() string { return fmt.Sprintf("tls handshake (%s): %v", e.Result, e.Err) }

// Unwrap returns the handshake's error.
func (e *Error) Unwrap() error { return e.Err }

// Sentinels of refusals decided by the Terminator rather than crypto/tls.
var (
	ErrNoALPN   = errors.New("the client offered no application protocol (ALPN); this listener speaks only h2")
	ErrNoConfig = errors.New("no TLS configuration")
)

// state is one handshake's, found by GetConfigForClient in the
// handshake's context.
type state struct {
	cfg    *tls.Config
	alpn   string
	echo   bool
	result Result // set when the ClientHello already says how it ends
}

type stateKey struct{}

// configForClient picks the handshake's configuration and notes what the
// ClientHello already tells: no version in common, no required protocol.
// It leaves refusals to crypto/tls where crypto/tls sends the right alert
// (protocol_version, no_application_protocol).
func configForClient(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	st, _ := hello.Context().Value(stateKey{}).(*state)
	if st == nil {
		return nil, ErrNoConfig
	}
	if !slices.ContainsFunc(hello.SupportedVersions, func(v uint16) bool { return v >= st.cfg.MinVersion }) {
		st.result = ResultVersion
	}
	if st.alpn != "" && !slices.Contains(hello.SupportedProtos, st.alpn) {
		st.result = ResultALPN
		if len(hello.SupportedProtos) == 0 {
			return nil, ErrNoALPN
		}
		// crypto/tls lets a client offering only http/1.1 through to an
		// h2 server as if it offered nothing (Go issue 46310); without
		// h2 among the server's protocols it refuses with
		// no_application_protocol, as it should here.
		refuse := st.cfg.Clone()
		refuse.NextProtos = []string{st.alpn + "-required"}
		return refuse, nil
	}
	if st.echo && len(hello.SupportedProtos) > 0 {
		echo := st.cfg.Clone()
		echo.NextProtos = hello.SupportedProtos[:1]
		return echo, nil
	}
	return st.cfg, nil
}

// Handshake runs the server handshake on conn within the timeout (or ctx's
// deadline, if sooner) and returns the TLS connection, or an *Error that
// says why it failed; conn is closed on failure. The result goes to
// Options.OnHandshake either way.
func (t *Terminator) Handshake(ctx context.Context, conn net.Conn) (*tls.Conn, error) {
	opts := t.opts.Load()
	tc, res, err := t.handshake(ctx, conn, opts)
	if opts.OnHandshake != nil {
		opts.OnHandshake(res, err)
	}
	if err != nil {
		_ = conn.Close()
		return nil, &Error{Result: res, Err: err}
	}
	return tc, nil
}

func (t *Terminator) handshake(ctx context.Context, conn net.Conn, opts *Options) (*tls.Conn, Result, error) {
	var cfg *tls.Config
	if opts.Config != nil {
		cfg = opts.Config()
	}
	if cfg == nil {
		return nil, ResultError, ErrNoConfig
	}
	deadline := time.Now().Add(opts.HandshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := conn.SetDeadline(deadline); err != nil {
		return nil, ResultClosed, err
	}
	st := &state{cfg: cfg, alpn: opts.RequireALPN, echo: opts.EchoALPN && opts.RequireALPN == ""}
	// crypto/tls reads and writes the socket through raw system calls
	// (see rawConn); conn keeps the deadlines, which are the socket's.
	tc := tls.Server(withRawIO(conn), t.base)
	// With a context that cannot be cancelled (the Listener's), crypto/tls
	// starts no goroutine to watch it: the deadline does that job.
	if err := tc.HandshakeContext(context.WithValue(ctx, stateKey{}, st)); err != nil {
		return nil, classify(st, err), err
	}
	if st.alpn != "" && tc.ConnectionState().NegotiatedProtocol != st.alpn {
		return nil, ResultALPN, fmt.Errorf("the client did not negotiate %s (ALPN %q)", st.alpn, tc.ConnectionState().NegotiatedProtocol)
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return nil, ResultClosed, err
	}
	return tc, ResultOK, nil
}

// classify turns a failed handshake into its Result.
func classify(st *state, err error) Result {
	var netErr net.Error
	var verr *tls.CertificateVerificationError
	var rerr tls.RecordHeaderError
	switch {
	case errors.As(err, &netErr) && netErr.Timeout():
		return ResultTimeout
	case st.result != "":
		return st.result
	case errors.As(err, &rerr):
		return ResultNotTLS
	case errors.As(err, &verr),
		// crypto/tls has no typed error for a missing client
		// certificate; this is its wording since Go 1.0 (a test pins it).
		strings.Contains(err.Error(), "didn't provide a certificate"):
		return ResultClientCert
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed):
		return ResultClosed
	}
	return ResultError
}
