package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// helperEnv makes the test binary act as a demo process (see helper).
const helperEnv = "DEMO_RUN_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(helper(os.Args[1:]))
	}
	goleak.VerifyTestMain(m)
}

// helper is a stand-in for the demo binaries:
//
//	serve NAME        print "NAME ready", on SIGTERM print "NAME stopping" and exit 0
//	ignore-term NAME  print "NAME ready" and ignore SIGTERM
//	exit NAME CODE    print "NAME ready" and an unterminated line, exit with CODE once told
//	                  so by a file: it waits until the path in $DEMO_RUN_TEST_EXIT exists
func helper(args []string) int {
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "helper: want MODE NAME")
		return 2
	}
	mode, name := args[0], args[1]
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	switch mode {
	case "serve":
		fmt.Printf("%s ready\r\n", name)
		<-ctx.Done()
		fmt.Fprintf(os.Stderr, "%s stopping\n", name)
		return 0
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
		fmt.Printf("%s ready\n", name)
		time.Sleep(time.Hour) // until SIGKILL
		return 0
	case "exit":
		fmt.Printf("%s ready\n", name)
		for {
			if _, err := os.Stat(os.Getenv("DEMO_RUN_TEST_EXIT")); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		fmt.Print("last words without a newline")
		var code int
		fmt.Sscan(args[2], &code)
		return code
	}
	return 2
}

// waitLong bounds waits for things that should happen soon, generously.
const waitLong = 30 * time.Second

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// lines returns what was said so far with the time prefixes removed.
func (s *syncBuffer) lines() []string {
	prefix := regexp.MustCompile(`^ *\d+\.\ds `)
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(s.String()), "\n") {
		out = append(out, prefix.ReplaceAllString(line, ""))
	}
	return out
}

// waitFor waits until the output holds text.
func (s *syncBuffer) waitFor(t *testing.T, text string) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for !strings.Contains(s.String(), text) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in output:\n%s", text, s.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// helperProc runs the test binary as a demo process, ready once it said so.
func helperProc(t *testing.T, out *syncBuffer, mode, name string, extra ...string) proc {
	t.Helper()
	t.Setenv(helperEnv, "1")
	return proc{
		name: name, path: os.Args[0], args: append([]string{mode, name}, extra...),
		stopWait: waitLong,
		ready: func(ctx context.Context) error {
			return poll(ctx, func() error {
				if strings.Contains(out.String(), name+" ready") {
					return nil
				}
				return fmt.Errorf("%s not ready yet", name)
			})
		},
	}
}

// startSupervise runs supervise in the background; the returned function
// waits for its result.
func startSupervise(t *testing.T, ctx context.Context, buf *syncBuffer, stages [][]proc) func() error {
	t.Helper()
	out := &output{w: buf, start: time.Now(), width: 8}
	done := make(chan error, 1)
	go func() { done <- supervise(ctx, out, stages, waitLong) }()
	var once sync.Once
	var err error
	wait := func() error {
		once.Do(func() {
			select {
			case err = <-done:
			case <-time.After(2 * waitLong):
				t.Fatal("supervise did not return")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = wait() })
	return wait
}

func TestSuperviseStartsInStagesAndStopsInReverse(t *testing.T) {
	var buf syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stages := [][]proc{
		{helperProc(t, &buf, "serve", "b1"), helperProc(t, &buf, "serve", "b2")},
		{helperProc(t, &buf, "serve", "proxy")},
		{helperProc(t, &buf, "serve", "client")},
	}
	wait := startSupervise(t, ctx, &buf, stages)
	buf.waitFor(t, "all started")
	cancel()
	if err := wait(); err != nil {
		t.Fatalf("supervise: %v", err)
	}

	lines := buf.lines()
	index := func(line string) int {
		t.Helper()
		i := slices.Index(lines, line)
		if i < 0 {
			t.Fatalf("no line %q in:\n%s", line, strings.Join(lines, "\n"))
		}
		return i
	}
	// Each stage starts once the one before is ready.
	if !(index("b2       | b2 ready") < index("demo-run | starting proxy: "+os.Args[0]+" serve proxy") &&
		index("proxy    | proxy ready") < index("demo-run | starting client: "+os.Args[0]+" serve client")) {
		t.Errorf("stages overlap:\n%s", strings.Join(lines, "\n"))
	}
	// The stops go backwards, each waiting for the previous to exit.
	order := []int{index("client   | client stopping"), index("proxy    | proxy stopping"),
		index("b2       | b2 stopping"), index("b1       | b1 stopping"), index("demo-run | all stopped")}
	if !slices.IsSorted(order) {
		t.Errorf("stop order wrong:\n%s", strings.Join(lines, "\n"))
	}
}

func TestSuperviseStopsEverythingWhenOneExits(t *testing.T) {
	var buf syncBuffer
	exitFile := t.TempDir() + "/exit"
	t.Setenv("DEMO_RUN_TEST_EXIT", exitFile)
	stages := [][]proc{{helperProc(t, &buf, "serve", "steady"), helperProc(t, &buf, "exit", "flaky", "3")}}
	wait := startSupervise(t, context.Background(), &buf, stages)
	buf.waitFor(t, "all started")
	if err := os.WriteFile(exitFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	err := wait()
	if err == nil || err.Error() != "flaky exited on its own: exit status 3" {
		t.Fatalf("supervise = %v, want flaky's exit", err)
	}
	lines := buf.lines()
	for _, want := range []string{"flaky    | last words without a newline", "steady   | steady stopping"} {
		if !slices.Contains(lines, want) {
			t.Errorf("no line %q in:\n%s", want, strings.Join(lines, "\n"))
		}
	}
}

func TestSuperviseFailsWhenAProcessDiesStarting(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := lis.Addr().String()
	lis.Close()

	var buf syncBuffer
	exitFile := t.TempDir() + "/exit"
	if err := os.WriteFile(exitFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DEMO_RUN_TEST_EXIT", exitFile)
	doomed := helperProc(t, &buf, "exit", "doomed", "1")
	doomed.ready = waitDial(closed) // never ready: it exits first
	later := helperProc(t, &buf, "serve", "later")
	err = startSupervise(t, context.Background(), &buf, [][]proc{{doomed}, {later}})()
	if err == nil || !strings.Contains(err.Error(), "doomed exited while starting: exit status 1") {
		t.Fatalf("supervise = %v, want doomed's early exit", err)
	}
	if strings.Contains(buf.String(), "starting later") {
		t.Errorf("started the next stage after a failure:\n%s", buf.String())
	}
}

func TestSuperviseKillsAProcessThatIgnoresSIGTERM(t *testing.T) {
	var buf syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stubborn := helperProc(t, &buf, "ignore-term", "stubborn")
	stubborn.stopWait = 100 * time.Millisecond
	wait := startSupervise(t, ctx, &buf, [][]proc{{stubborn}})
	buf.waitFor(t, "all started")
	cancel()
	if err := wait(); err != nil {
		t.Fatalf("supervise: %v", err)
	}
	if !strings.Contains(buf.String(), "stubborn did not stop within 100ms: killing it") {
		t.Errorf("no kill notice in:\n%s", buf.String())
	}
}

func TestLineWriter(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		want   string
	}{
		{"one line", []string{"hello\n"}, "x | hello\n"},
		{"split line", []string{"hel", "lo\nwor", "ld\n"}, "x | hello\nx | world\n"},
		{"crlf and empty", []string{"a\r\n\nb\n"}, "x | a\nx | \nx | b\n"},
		{"unterminated", []string{"tail"}, "x | tail\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			w := &lineWriter{out: &output{w: &buf, width: 1}, name: "x"}
			for _, s := range tt.writes {
				if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			w.flush()
			got := regexp.MustCompile(`(?m)^ *\d+\.\ds `).ReplaceAllString(buf.String(), "")
			if got != tt.want {
				t.Errorf("output %q, want %q", got, tt.want)
			}
		})
	}
}

func TestColorOnlyOnTheName(t *testing.T) {
	var buf bytes.Buffer
	out := &output{w: &buf, width: 5, color: true}
	out.line("vigil", vigilColor, []byte("msg"))
	if got := buf.String(); !strings.HasSuffix(got, "s "+vigilColor+"vigil\x1b[0m | msg\n") {
		t.Errorf("colored line %q", got)
	}
}

func TestPlan(t *testing.T) {
	opts, err := parseOptions(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	p := plan(opts)
	var got []string
	for _, pr := range p.all() {
		got = append(got, pr.name+": "+pr.path+" "+strings.Join(pr.args, " "))
	}
	want := []string{
		"demo-1: bin/demo-backend -id demo-1 -addr 127.0.0.1:50051 -control 127.0.0.1:50061",
		"demo-2: bin/demo-backend -id demo-2 -addr 127.0.0.1:50052 -control 127.0.0.1:50062 -flip-after 8s -flip-for 8s -flip-every 40s",
		"demo-3: bin/demo-backend -id demo-3 -addr 127.0.0.1:50053 -control 127.0.0.1:50063",
		"vigil: bin/vigil run --config config.example.yaml",
		"client-grpc: bin/demo-client -name client-grpc -target 127.0.0.1:8080 -mode grpc -rate 20 -report 2s -call both",
		"client-tcp: bin/demo-client -name client-tcp -target 127.0.0.1:8081 -mode tcp -rate 20 -report 2s",
	}
	if !slices.Equal(got, want) {
		t.Errorf("plan:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	opts, err = parseOptions([]string{"-tcp", "", "-control-base", "0", "-flip-every", "0", "-bin", "/x"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	p = plan(opts)
	if len(p.clients) != 1 || slices.Contains(p.backends[1].args, "-flip-every") || slices.Contains(p.backends[0].args, "-control") {
		t.Errorf("plan with options: %+v", p)
	}
}

func TestRunWithoutBinaries(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"-bin", t.TempDir()}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "run 'make build' first") {
		t.Errorf("run = %v, want a hint to build first", err)
	}
	for _, args := range [][]string{{"-backends", ""}, {"-backends", "nope"}, {"-ready-timeout", "0s"}, {"stray"}} {
		if err := run(context.Background(), args, &stdout, &stderr); err == nil {
			t.Errorf("run(%q) accepted bad flags", args)
		}
	}
}
