package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/vigil-proxy/vigil/internal/interoptest"
)

// The non-Go interop suites (`make test-interop`) run vigil against gRPC
// implementations that are not grpc-go, as backends and as clients: C-core
// through Debian's python3-grpcio, and grpc-js through npm's @grpc/grpc-js
// and grpc-health-check (.ci/install-interop installs both). Their programs
// are in testdata/interop.

const interopDir = "testdata/interop"

// peerKind is one non-Go gRPC implementation.
type peerKind struct {
	name    string
	backend []string // argv of the backend program, without flags
	client  []string // argv of the client program, before the target
	env     []string
	// shutdownCancels: the server's graceful stop cancels (RST_STREAM
	// CANCEL) the calls it had taken off the wire but not yet given to a
	// handler, as C-core does; a client talking to it directly sees them
	// as CANCELLED too, and no proxy can tell them from calls that ran.
	// Now and then C-core closes the connection before such a stream is
	// reset (a CI run saw it once in 1,259 calls): the call, accepted
	// under the GOAWAY's last stream id, then ends UNAVAILABLE, which no
	// proxy may retry either. At most one call per load worker can be
	// caught so.
	shutdownCancels bool
}

// pythonPeer is C-core, through Debian's python3-grpcio (for /usr/bin/python3).
func pythonPeer(t *testing.T) peerKind {
	py := os.Getenv("VIGIL_PYTHON")
	if py == "" {
		py = "/usr/bin/python3"
	}
	if err := exec.Command(py, "-c", "import grpc").Run(); err != nil {
		requireTool(t, fmt.Sprintf("%s with grpc (Debian python3-grpcio; make test-interop installs it): %v", py, err))
	}
	return peerKind{name: "python", backend: []string{py, "backend.py"}, client: []string{py, "client.py"}, shutdownCancels: true}
}

// nodePeer is grpc-js, from the npm cache .ci/install-interop fills.
func nodePeer(t *testing.T) peerKind {
	node, err := exec.LookPath("node")
	if err != nil {
		requireTool(t, "node is not installed")
	}
	mods := os.Getenv("VIGIL_NODE_MODULES")
	if mods == "" {
		home, _ := os.UserHomeDir()
		mods = filepath.Join(home, ".cache", "vigil", "node", "node_modules")
	}
	if !fileExists(filepath.Join(mods, "@grpc", "grpc-js", "package.json")) || !fileExists(filepath.Join(mods, "grpc-health-check", "package.json")) {
		requireTool(t, "@grpc/grpc-js and grpc-health-check are not in "+mods+" (make test-interop installs them)")
	}
	return peerKind{name: "node", backend: []string{node, "backend.js"}, client: []string{node, "client.js"}, env: []string{"NODE_PATH=" + mods}}
}

func requireTool(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("VIGIL_REQUIRE_TOOLS") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// peerBackend is a running backend program of a peer kind.
type peerBackend struct {
	addr  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *lineLog
	done  chan struct{}
}

// lineLog keeps what a program printed.
type lineLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *lineLog) add(s string) {
	l.mu.Lock()
	l.lines = append(l.lines, s)
	l.mu.Unlock()
}

func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

func startPeerBackend(t *testing.T, k peerKind, id string, flags ...string) *peerBackend {
	t.Helper()
	argv := append(append(append([]string{}, k.backend...), "--id", id), flags...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = interopDir
	cmd.Env = append(os.Environ(), k.env...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	b := &peerBackend{cmd: cmd, stdin: stdin, out: &lineLog{}, done: make(chan struct{})}
	cmd.Stderr = logWriter{b.out}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	port := make(chan string, 1)
	go func() {
		defer close(b.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			b.out.add(line)
			if p, ok := strings.CutPrefix(line, "listening "); ok {
				port <- p
			}
		}
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-b.done
	})
	select {
	case p := <-port:
		b.addr = "127.0.0.1:" + p
	case <-b.done:
		t.Fatalf("%s backend exited at start:\n%s", k.name, b.out)
	case <-time.After(30 * time.Second):
		t.Fatalf("%s backend not listening within 30s:\n%s", k.name, b.out)
	}
	return b
}

type logWriter struct{ l *lineLog }

func (w logWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		w.l.add(line)
	}
	return len(p), nil
}

// setStatus sets a health status of the backend ("" is the whole server).
func (b *peerBackend) setStatus(t *testing.T, service, st string) {
	t.Helper()
	if service == "" {
		service = "-"
	}
	if _, err := fmt.Fprintf(b.stdin, "status %s %s\n", service, st); err != nil {
		t.Fatalf("set status: %v", err)
	}
}

// stop stops the backend gracefully (SIGTERM) and waits for it to exit.
func (b *peerBackend) stop(t *testing.T) {
	t.Helper()
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("backend did not stop within 30s:\n%s", b.out)
	}
}

// peerLoad runs unary calls on workers goroutines until stop is closed and
// reports how many succeeded and the failures.
type peerLoad struct {
	ok     atomic.Int64
	mu     sync.Mutex
	failed []error
	wg     sync.WaitGroup
	stop   chan struct{}
}

func startPeerLoad(t *testing.T, addr string, workers int) *peerLoad {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	l := &peerLoad{stop: make(chan struct{})}
	tc := testpb.NewTestServiceClient(cc)
	for range workers {
		l.wg.Go(func() {
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 64, Payload: &testpb.Payload{Body: make([]byte, 64)}})
				cancel()
				if err != nil {
					l.mu.Lock()
					l.failed = append(l.failed, err)
					l.mu.Unlock()
					continue
				}
				l.ok.Add(1)
			}
		})
	}
	t.Cleanup(func() { l.end(); _ = cc.Close() })
	return l
}

func (l *peerLoad) end() (ok int64, failed []error) {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok.Load(), l.failed
}

// waitOK waits until the load has made n more successful calls.
func (l *peerLoad) waitOK(t *testing.T, n int64) {
	t.Helper()
	target := l.ok.Load() + n
	eventually(t, 60*time.Second, func() bool { return l.ok.Load() >= target }, "%d more successful calls", n)
}

func vigilFor(t *testing.T, mode string, listenerExtra string, endpoints ...string) *vigilProc {
	health := "mode: " + mode + "\ninterval: 200ms\ntimeout: 200ms\nunhealthy_threshold: 2\nhealthy_threshold: 1"
	return startVigil(t, yamlConfig{
		Admin:     true,
		Listeners: []yamlListener{{Name: "api", Cluster: "c", Extra: listenerExtra}},
		Clusters:  []yamlCluster{{Name: "c", Endpoints: endpoints, Health: health}},
	}.String())
}

// testPeerBackends runs vigil in front of two backends of kind k: health
// checks (Check and Watch) and their verdicts, every grpc-go interop case
// through vigil, a graceful stop and a maximum connection age under load
// with no failed call.
func testPeerBackends(t *testing.T, k peerKind) {
	for _, mode := range []string{"check", "watch"} {
		t.Run(mode, func(t *testing.T) {
			b0, b1 := startPeerBackend(t, k, "b0"), startPeerBackend(t, k, "b1")
			v := vigilFor(t, mode, "", b0.addr, b1.addr)
			v.wait(20*time.Second, 0, match("endpoint admitted", "endpoint", b0.addr), "b0 admitted")
			v.wait(20*time.Second, 0, match("endpoint admitted", "endpoint", b1.addr), "b1 admitted")
			addr := v.listener("api")

			t.Run("interop", func(t *testing.T) { interoptest.Run(t, addr) })

			mark := v.mark()
			b1.setStatus(t, "", "NOT_SERVING")
			v.wait(20*time.Second, mark, match("endpoint evicted", "endpoint", b1.addr, "reason", "NOT_SERVING"), "b1 evicted")
			mark = v.mark()
			b1.setStatus(t, "", "SERVING")
			v.wait(20*time.Second, mark, match("endpoint readmitted", "endpoint", b1.addr), "b1 readmitted")

			// A graceful stop under load loses no call.
			l := startPeerLoad(t, addr, 4)
			l.waitOK(t, 200)
			b1.stop(t)
			l.waitOK(t, 500)
			ok, failed := l.end()
			var cancelled, other []error
			for _, err := range failed {
				if c := status.Code(err); k.shutdownCancels && (c == codes.Canceled || c == codes.Unavailable) {
					cancelled = append(cancelled, err)
				} else {
					other = append(other, err)
				}
			}
			t.Logf("%s backend's graceful stop under load: %d calls, %d failed (%d cancelled by the backend's shutdown)", k.name, ok, len(failed), len(cancelled))
			if len(other) > 0 {
				t.Errorf("%d calls failed during a graceful stop: %v", len(other), other[:min(3, len(other))])
			}
			if len(cancelled) > 4 { // 4 load workers: one call in flight each
				t.Errorf("%d calls dropped by the backend's shutdown, more than the 4 in flight: %v", len(cancelled), cancelled[:3])
			}
		})
	}
	t.Run("max connection age", func(t *testing.T) {
		b := startPeerBackend(t, k, "aged", "--max-connection-age-ms", "100")
		v := vigilFor(t, "check", "", b.addr)
		v.wait(20*time.Second, 0, match("endpoint admitted"), "admitted")
		l := startPeerLoad(t, v.listener("api"), 8)
		l.waitOK(t, 5000)
		ok, failed := l.end()
		replayed, err := chaosScrapeSeries("http://"+v.adminAddr(), "vigil_upstream_rq_replayed_total")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s backend with a 100 ms max connection age: %d calls, %d failed; replayed by vigil: %v", k.name, ok, len(failed), replayed)
		if len(failed) > 0 {
			t.Errorf("%d of %d calls failed: %v", len(failed), ok+int64(len(failed)), failed[:min(3, len(failed))])
		}
	})
}

// testPeerClient runs the client program of kind k through vigil (a
// listener at max_concurrent_streams 4, so the stream_limit case keeps it
// at its limit) in front of grpc-go's interop server, which attaches error
// details to INVALID_ARGUMENT answers.
func testPeerClient(t *testing.T, k peerKind) {
	srv := interoptest.StartServer(t, grpc.ChainUnaryInterceptor(withErrorDetails))
	v := vigilFor(t, "check", "max_concurrent_streams: 4", srv.Addr)
	v.wait(20*time.Second, 0, match("endpoint admitted"), "admitted")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	argv := append(append([]string{}, k.client...), v.listener("api"))
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = interopDir
	cmd.Env = append(os.Environ(), k.env...)
	out, err := cmd.Output()
	var stderr string
	if ee, ok := err.(*exec.ExitError); ok {
		stderr = string(ee.Stderr)
	}
	cases := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var r struct {
			Case    string  `json:"case"`
			OK      bool    `json:"ok"`
			Detail  string  `json:"detail"`
			Seconds float64 `json:"seconds"`
		}
		if json.Unmarshal([]byte(line), &r) != nil || r.Case == "" {
			continue
		}
		cases++
		if !r.OK {
			t.Errorf("%s client, %s: %s", k.name, r.Case, r.Detail)
		} else {
			t.Logf("%s client, %s: ok (%.3fs)", k.name, r.Case, r.Seconds)
		}
	}
	if err != nil || cases < 15 {
		t.Fatalf("%s client: %v, %d cases; output:\n%s\n%s", k.name, err, cases, out, stderr)
	}
}

// withErrorDetails answers an INVALID_ARGUMENT status asked for with
// message "with details" with error details (google.rpc.Status details).
func withErrorDetails(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	resp, err := h(ctx, req)
	if st, ok := status.FromError(err); ok && st.Code() == codes.InvalidArgument && st.Message() == "with details" {
		if d, derr := st.WithDetails(&testpb.Payload{Body: []byte("detail")}); derr == nil {
			return nil, d.Err()
		}
	}
	return resp, err
}

func TestInteropPythonBackend(t *testing.T) { testPeerBackends(t, pythonPeer(t)) }
func TestInteropPythonClient(t *testing.T)  { testPeerClient(t, pythonPeer(t)) }
func TestInteropNodeBackend(t *testing.T)   { testPeerBackends(t, nodePeer(t)) }
func TestInteropNodeClient(t *testing.T)    { testPeerClient(t, nodePeer(t)) }
