package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// RunStreams is the streaming counterpart of Run: each of Concurrency
// workers opens one grpc.testing.TestService/FullDuplexCall bidi stream and
// plays ping-pong on it (one RequestSize message out, one ResponseSize
// message back) for the run's Duration or until Requests round trips have
// been made in total. A round trip counts as one request in the Result:
// QPS is round trips per second and the percentiles are round-trip
// latencies.
//
// The streams are opened and warmed up (Warmup round trips each) before
// the measured part starts (where OnMeasureStart is called), so stream
// set-up is not measured, and they are closed cleanly (CloseSend, then the
// server's end of stream) after it, outside the measured time. A stream
// that fails stops its worker: the failure is counted once.
func RunStreams(ctx context.Context, cfg Config) (Result, error) {
	clients, closeAll, err := connect(&cfg)
	if err != nil {
		return Result{}, err
	}
	defer closeAll()
	req := &testgrpc.StreamingOutputCallRequest{
		ResponseType:       testgrpc.PayloadType_COMPRESSABLE,
		ResponseParameters: []*testgrpc.ResponseParameters{{Size: int32(cfg.ResponseSize)}},
		Payload:            &testgrpc.Payload{Body: make([]byte, cfg.RequestSize)},
	}

	// The streams live on ctx, not on the run's deadline: a stream cut by
	// the deadline would end in a reset, which is not what is measured.
	streamCtx, cancelStreams := context.WithCancel(ctx)
	defer cancelStreams()
	streams := make([]testgrpc.TestService_FullDuplexCallClient, cfg.Concurrency)
	for w := range streams {
		s, err := clients[w%len(clients)].FullDuplexCall(streamCtx)
		if err != nil {
			return Result{}, fmt.Errorf("loadgen: open stream %d to %s: %w", w, cfg.Target, err)
		}
		streams[w] = s
		for i := range cfg.Warmup {
			if err := roundTrip(s, req); err != nil {
				return Result{}, fmt.Errorf("loadgen: warmup round trip %d on stream %d to %s: %w", i, w, cfg.Target, err)
			}
		}
	}

	var stop atomic.Bool
	var issued atomic.Int64
	type workerResult struct {
		lat      []time.Duration
		errors   int
		firstErr error
	}
	results := make([]workerResult, cfg.Concurrency)
	var wg sync.WaitGroup
	if cfg.OnMeasureStart != nil {
		cfg.OnMeasureStart()
	}
	cpuStart, began := cpuTime(), time.Now()
	var timer *time.Timer
	if cfg.Duration > 0 {
		timer = time.AfterFunc(cfg.Duration, func() { stop.Store(true) })
	}
	for w, s := range streams {
		wg.Go(func() {
			res := &results[w]
			for !stop.Load() && ctx.Err() == nil {
				if cfg.Requests > 0 && issued.Add(1) > int64(cfg.Requests) {
					return
				}
				t0 := time.Now()
				if err := roundTrip(s, req); err != nil {
					// A broken stream cannot carry on: the worker stops.
					res.errors++
					res.firstErr = err
					return
				}
				res.lat = append(res.lat, time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed, cpu := time.Since(began), cpuTime()-cpuStart
	if timer != nil {
		timer.Stop()
	}

	var r Result
	for w, s := range streams {
		if results[w].errors > 0 {
			continue
		}
		if err := closeStream(s); err != nil {
			results[w].errors++
			results[w].firstErr = err
		}
	}
	var all []time.Duration
	for _, w := range results {
		all = append(all, w.lat...)
		r.Errors += w.errors
		if r.FirstErr == nil {
			r.FirstErr = w.firstErr
		}
	}
	r.Requests, r.Elapsed = len(all), elapsed
	if r.Requests > 0 {
		slices.Sort(all)
		pct := func(p int) time.Duration { return all[min(len(all)-1, len(all)*p/100)] }
		r.P50, r.P90, r.P99, r.Max = pct(50), pct(90), pct(99), all[len(all)-1]
		r.QPS = float64(r.Requests) / elapsed.Seconds()
		r.CPUPerRPC = cpu / time.Duration(r.Requests)
	}
	return r, nil
}

func roundTrip(s testgrpc.TestService_FullDuplexCallClient, req *testgrpc.StreamingOutputCallRequest) error {
	if err := s.Send(req); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	if _, err := s.Recv(); err != nil {
		return fmt.Errorf("receive: %w", err)
	}
	return nil
}

// closeStream half-closes s and waits for the server's end of the stream.
func closeStream(s testgrpc.TestService_FullDuplexCallClient) error {
	if err := s.CloseSend(); err != nil {
		return fmt.Errorf("close send: %w", err)
	}
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("end of stream: got %v, want EOF", err)
	}
	return nil
}
