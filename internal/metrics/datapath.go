package metrics

import (
	"sync/atomic"
	"time"

	"github.com/vigil-proxy/vigil/balancer/grpcproxy"
	"github.com/vigil-proxy/vigil/balancer/tcpproxy"
	"github.com/vigil-proxy/vigil/internal/tlsconf"
)

// tcpOutcomes are the values of vigil_tcp_connections_closed_total{outcome},
// indexed as listenerState.outcomes.
var tcpOutcomes = [...]tcpproxy.Outcome{
	tcpproxy.OutcomeOK, tcpproxy.OutcomeNoHealthyUpstream, tcpproxy.OutcomeConnectFailed,
	tcpproxy.OutcomeOverLimit, tcpproxy.OutcomeIdleTimeout, tcpproxy.OutcomeEndpointClosed,
	tcpproxy.OutcomeShutdown, tcpproxy.OutcomeNoRoute, tcpproxy.OutcomeBadHello, tcpproxy.OutcomeError,
}

// outcomeError is the index of OutcomeError, which also counts outcomes
// this package does not know.
const outcomeError = len(tcpOutcomes) - 1

func outcomeIndex(o tcpproxy.Outcome) int {
	for i, known := range tcpOutcomes {
		if o == known {
			return i
		}
	}
	return outcomeError
}

// listenerState is what the data-path hooks count for one listener. It is
// kept by name, so a listener whose proxy a reload replaced keeps counting
// the old proxy's connections until they end.
type listenerState struct {
	conns    atomic.Int64 // client connections open
	streams  atomic.Int64 // RPCs in flight (grpc)
	accepted atomic.Uint64
	rejected atomic.Uint64
	// TCP only.
	outcomes                       [len(tcpOutcomes)]atomic.Uint64
	bytesToUpstream, bytesToClient atomic.Uint64
	// TLS listeners only: handshakes indexed as tlsterm.Results, and the
	// certificates served (nil: the listener is plaintext).
	handshakes [numTLSResults]atomic.Uint64
	tlsCerts   atomic.Pointer[[]tlsconf.Cert]
	// accessLogDropped counts the access log records dropped.
	accessLogDropped atomic.Uint64
}

// numTLSResults is len(tlsterm.Results); a test keeps them equal.
const numTLSResults = 9

func (m *Metrics) listener(name string) *listenerState {
	if v, ok := m.listeners.Load(name); ok {
		return v.(*listenerState)
	}
	v, _ := m.listeners.LoadOrStore(name, &listenerState{})
	return v.(*listenerState)
}

// TCP returns the hooks of a tcp listener's data path
// (tcpproxy.Options.Metrics).
func (m *Metrics) TCP(listener string) tcpproxy.Metrics {
	return &tcpHooks{m: m, l: m.listener(listener)}
}

// GRPC returns the hooks of a grpc listener's data path
// (grpcproxy.Options.Metrics).
func (m *Metrics) GRPC(listener string) grpcproxy.Metrics {
	return &grpcHooks{m: m, l: m.listener(listener)}
}

// AccessLogDropped returns what counts a listener's dropped access log
// records in vigil_access_log_dropped_total: an atomic add, for the data
// path.
func (m *Metrics) AccessLogDropped(listener string) func() {
	l := m.listener(listener)
	return func() { l.accessLogDropped.Add(1) }
}

type tcpHooks struct {
	m *Metrics
	l *listenerState
}

func (h *tcpHooks) ConnectionOpened(cluster, endpoint string) {
	h.l.accepted.Add(1)
	h.l.conns.Add(1)
	h.m.endpoint(cluster, endpoint, true).conns.Add(1)
}

func (h *tcpHooks) DialFailed(cluster, _ string, _ error) {
	cs := h.m.cluster(cluster)
	cs.connectFailures.get(h.m, cs).Inc()
}

func (h *tcpHooks) ConnectionClosed(s tcpproxy.ConnStats) {
	switch {
	case s.Endpoint != "":
		// Opened counted it as accepted.
		h.l.conns.Add(-1)
		if es := h.m.endpoint(s.Cluster, s.Endpoint, false); es != nil {
			es.conns.Add(-1)
		}
	case s.Outcome == tcpproxy.OutcomeOverLimit:
		h.l.rejected.Add(1)
	default:
		h.l.accepted.Add(1)
	}
	h.l.outcomes[outcomeIndex(s.Outcome)].Add(1)
	h.l.bytesToUpstream.Add(uint64(max(s.BytesToUpstream, 0)))
	h.l.bytesToClient.Add(uint64(max(s.BytesToClient, 0)))
}

type grpcHooks struct {
	m *Metrics
	l *listenerState
}

func (h *grpcHooks) RPCStarted(cluster, endpoint string) {
	h.l.streams.Add(1)
	h.m.endpoint(cluster, endpoint, true).streams.Add(1)
}

func (h *grpcHooks) RPCFinished(cluster, route, endpoint, code string, elapsed time.Duration) {
	cs := h.m.cluster(cluster)
	rs := h.m.route(cs, route)
	rs.codes[codeIndex(code)].get(h.m, cs).Inc()
	rs.duration.get(h.m, cs).Observe(elapsed.Seconds())
	if endpoint == "" {
		return // no RPCStarted preceded it
	}
	h.l.streams.Add(-1)
	if es := h.m.endpoint(cluster, endpoint, false); es != nil {
		es.streams.Add(-1)
	}
}

func (h *grpcHooks) RPCRetried(cluster, _ string) {
	cs := h.m.cluster(cluster)
	cs.connectFailures.get(h.m, cs).Inc()
}

func (h *grpcHooks) RPCReplayed(cluster, _, reason string) {
	cs := h.m.cluster(cluster)
	c := &cs.replayedGoAway
	if reason == "refused_stream" {
		c = &cs.replayedRefused
	}
	c.get(h.m, cs).Inc()
}

func (h *grpcHooks) ConnOpened() {
	h.l.accepted.Add(1)
	h.l.conns.Add(1)
}

func (h *grpcHooks) ConnClosed() { h.l.conns.Add(-1) }

func (h *grpcHooks) ConnRejected() { h.l.rejected.Add(1) }
