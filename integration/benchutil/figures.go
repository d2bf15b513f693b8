package benchutil

import "fmt"

// e2e is how make bench runs the end-to-end benchmarks; the sections add
// the -bench pattern and their own -benchtime or -count.
const e2e = "VIGIL_INTEGRATION_NORACE=1 go test -run '^$' -timeout 30m ./integration/"

// Sections are the figures of vigil's end-to-end benchmarks
// (integration/bench_*_test.go), with the issues' targets.
func Sections() []Section {
	return []Section{
		tcpSection(),
		checkCostSection(),
		grpcSection(),
		evictionSection(),
		scaleSection(),
		reloadSection(),
	}
}

func target(t Target) *Target { return &t }

var proxies = []string{"direct", "vigil", "haproxy", "nginx"}

func tcpSection() Section {
	s := Section{
		Title: "TCP data path (issue 2): bulk transfer through a tcp listener, 1 GiB per transfer",
		Notes: []string{
			"cores shared by: the client (benchmark process), the sink/source helper process, the proxy measured (others idle)",
			"MB = 10^6 bytes; the proxy's CPU from /proc/PID/stat (10 ms ticks) over the transfers; ×direct = MB/s over direct's",
		},
		Command: e2e + " -bench TCPBulk -benchtime 3x",
		LoadOf:  "BenchmarkTCPBulk",
	}
	for _, dir := range []string{"upload", "download"} {
		t := Table{
			Title: dir + ":",
			Base:  "BenchmarkTCPBulk/" + dir + "/direct",
			Columns: []Column{
				{Header: "MB/s", Unit: "MB/s"},
				{Header: "×direct", Unit: "MB/s", Op: Ratio},
				{Header: "proxy CPU µs/MB", Unit: "proxy-cpu-µs/MB"},
			},
		}
		for _, p := range proxies {
			t.Rows = append(t.Rows, Row{Label: p, Bench: "BenchmarkTCPBulk/" + dir + "/" + p})
		}
		s.Tables = append(s.Tables, t)
		s.Figures = append(s.Figures,
			Figure{Label: dir + ": vigil MB/s over direct", Bench: "BenchmarkTCPBulk/" + dir + "/vigil", Unit: "MB/s", Op: Ratio, Base: t.Base, Show: "×", Target: target(AtLeast(0.44, "× (HAProxy's)"))},
			Figure{Label: dir + ": vigil CPU per MB", Bench: "BenchmarkTCPBulk/" + dir + "/vigil", Unit: "proxy-cpu-µs/MB", Show: " µs", Target: target(AtMost(600, " µs (HAProxy's)"))},
		)
	}
	return s
}

// healthColumns are the columns of the health-checking scale benchmarks.
var healthColumns = []Column{
	{Header: "endpoints", Unit: "endpoints"},
	{Header: "all healthy s", Unit: "admit-s"},
	{Header: "healthy at 10s", Unit: "healthy-at-10s"},
	{Header: "CPU %core", Unit: "cpu-%"},
	{Header: "RSS MiB", Unit: "rss-MiB"},
	{Header: "peak MiB", Unit: "hwm-MiB"},
	{Header: "KiB/endpoint", Unit: "rss-KiB/endpoint"},
	{Header: "evicted start", Unit: "evicted-startup"},
	{Header: "evicted steady", Unit: "evicted-steady"},
	{Header: "fleet CPU %core", Unit: "fleet-cpu-%"},
}

func checkCostSection() Section {
	const b = "BenchmarkCheckCost"
	return Section{
		Title: "Checking cost (issue 2): 1,000 endpoints, check mode, interval 1 s (1,000 Checks/s)",
		Notes: []string{
			"cores shared by: vigil, the fleet helper process (1,000 health servers), the benchmark process (log reader)",
			"CPU over 20 s of steady state once all are healthy; KiB/endpoint is RSS above a vigil checking one endpoint",
			"every backend stays healthy: each eviction is a false one; fleet CPU is the health servers'",
		},
		Command: e2e + " -bench CheckCost -benchtime 1x",
		LoadOf:  b,
		Tables:  []Table{{Columns: healthColumns, Rows: []Row{{Label: "check 1s", Bench: b}}}},
		Figures: []Figure{
			{Label: "false evictions", Bench: b, Unit: "evicted-startup", Target: target(Zero())},
			{Label: "false evictions (steady)", Bench: b, Unit: "evicted-steady", Target: target(Zero())},
		},
	}
}

func grpcSection() Section {
	s := Section{
		Title: "gRPC load (issue 3): 2 backends, 1 KiB each way, closed loop, 5 s per run",
		Notes: []string{
			"cores shared by: the load generator (benchmark process), 2 demo-backend processes, the proxy measured (others idle)",
			"c1: 1 connection; c64: 64 RPCs (or streams) in flight over 4 connections; direct: the client balances over both itself",
			"stream: bidi FullDuplexCall ping-pong, a round trip counts as an RPC; CPU per RPC from /proc of the proxy's processes",
		},
		Command: e2e + " -bench GRPCLoad -benchtime 1x -count 3",
		LoadOf:  "BenchmarkGRPCLoad",
	}
	for _, kind := range []string{"unary", "stream"} {
		for _, c := range []string{"c1", "c64"} {
			prefix := "BenchmarkGRPCLoad/" + kind + "/" + c + "/"
			t := Table{
				Title: kind + " " + c + ":",
				Base:  prefix + "direct",
				Columns: []Column{
					{Header: "RPCs/s", Unit: "rps"},
					{Header: "×direct", Unit: "rps", Op: Ratio},
					{Header: "p50 µs", Unit: "p50-µs"},
					{Header: "+p50 µs", Unit: "p50-µs", Op: Diff},
					{Header: "p99 µs", Unit: "p99-µs"},
					{Header: "proxy CPU µs/RPC", Unit: "proxy-cpu-µs/rpc"},
					{Header: "backends µs/RPC", Unit: "backends-cpu-µs/rpc"},
					{Header: "failed", Unit: "errors"},
				},
			}
			for _, p := range proxies {
				t.Rows = append(t.Rows, Row{Label: p, Bench: prefix + p})
			}
			s.Tables = append(s.Tables, t)
			vigil := prefix + "vigil"
			label := kind + " " + c + ": vigil "
			if c == "c64" {
				s.Figures = append(s.Figures, Figure{Label: label + "RPCs/s over direct", Bench: vigil, Unit: "rps", Op: Ratio, Base: t.Base, Show: "×", Target: target(AtLeast(0.70, "×"))})
			} else {
				s.Figures = append(s.Figures, Figure{Label: label + "added p50", Bench: vigil, Unit: "p50-µs", Op: Diff, Base: t.Base, Show: " µs", Target: target(Below(100, " µs"))})
			}
			if kind == "unary" {
				s.Figures = append(s.Figures, Figure{Label: label + "CPU per RPC", Bench: vigil, Unit: "proxy-cpu-µs/rpc", Show: " µs", Target: target(AtMost(60, " µs (HAProxy's; stretch 30)"))})
			}
			s.Figures = append(s.Figures, Figure{Label: label + "failed RPCs", Bench: vigil, Unit: "errors", Target: target(Zero())})
		}
	}
	return s
}

func evictionSection() Section {
	s := Section{
		Title: "Eviction latency (issue 4): SetServingStatus(NOT_SERVING) to the last RPC routed to that backend",
		Notes: []string{
			"cores shared by: vigil, the benchmark process (both backends and a 2-worker RPC loop through vigil)",
			"by routing: the backend stamps each RPC's arrival; watch: 100 flips; check-1s (interval 1 s): 50 flips at random phases",
			"resolution = mean gap between two RPCs to the flipped backend; late = RPCs that reached it after it visibly stopped getting any",
		},
		Command: e2e + " -bench Eviction -benchtime 1x",
		LoadOf:  "BenchmarkEviction",
		Tables: []Table{{
			Columns: []Column{
				{Header: "flips", Unit: "flips"},
				{Header: "p50 ms", Unit: "evict-p50-ms"},
				{Header: "p99 ms", Unit: "evict-p99-ms"},
				{Header: "max ms", Unit: "evict-max-ms"},
				{Header: "readmit p50 ms", Unit: "readmit-p50-ms"},
				{Header: "resolution µs", Unit: "rpc-gap-µs"},
				{Header: "late", Unit: "late-rpcs"},
				{Header: "failed", Unit: "errors"},
			},
			Rows: []Row{{Label: "watch", Bench: "BenchmarkEviction/watch"}, {Label: "check 1s", Bench: "BenchmarkEviction/check-1s"}},
		}},
	}
	const watch = "BenchmarkEviction/watch"
	s.Figures = []Figure{
		{Label: "watch: eviction p50", Bench: watch, Unit: "evict-p50-ms", Show: " ms", Target: target(AtMost(5, " ms"))},
		{Label: "watch: eviction p99", Bench: watch, Unit: "evict-p99-ms", Show: " ms", Target: target(AtMost(50, " ms"))},
	}
	for _, mode := range []string{"watch", "check-1s"} {
		name := "BenchmarkEviction/" + mode
		s.Figures = append(s.Figures,
			Figure{Label: mode + ": RPCs routed after the eviction", Bench: name, Unit: "late-rpcs", Target: target(Zero())},
			Figure{Label: mode + ": failed RPCs", Bench: name, Unit: "errors", Target: target(Zero())},
		)
	}
	return s
}

func scaleSection() Section {
	const watch, check = "BenchmarkScale/watch", "BenchmarkScale/check-5s"
	return Section{
		Title: "Scale (issue 4): 10,000 endpoints (100 clusters of 100)",
		Notes: []string{
			"cores shared by: vigil, 3 fleet helper processes (the 10,000 health servers), the benchmark process (log reader)",
			"watch: interval 5 s (a liveness Check per silent stream every 5 s), CPU over 20 s of steady state; check-5s: 2,000 Checks/s over 60 s",
			"every backend stays healthy: each eviction is a false one; KiB/endpoint is RSS above a vigil checking one endpoint",
		},
		Command: e2e + " -bench Scale -benchtime 1x",
		LoadOf:  "BenchmarkScale",
		Tables:  []Table{{Columns: healthColumns, Rows: []Row{{Label: "watch", Bench: watch}, {Label: "check 5s", Bench: check}}}},
		Figures: []Figure{
			{Label: "watch: all healthy after start", Bench: watch, Unit: "admit-s", Show: " s", Target: target(AtMost(10, " s"))},
			{Label: "watch: vigil CPU, nothing changing", Bench: watch, Unit: "cpu-%", Show: "%", Target: target(Below(2, "% of a core"))},
			{Label: "watch: RSS per checked endpoint", Bench: watch, Unit: "rss-KiB/endpoint", Show: " KiB", Target: target(AtMost(64, " KiB"))},
			{Label: "check 5s: false evictions (start-up)", Bench: check, Unit: "evicted-startup", Target: target(Zero())},
			{Label: "check 5s: false evictions (60 s steady)", Bench: check, Unit: "evicted-steady", Target: target(Zero())},
		},
	}
}

func reloadSection() Section {
	s := Section{
		Title: "Reload (issue 5): one endpoint swapped, from the file write",
		Notes: []string{
			"cores shared by: vigil, 3 fleet helper processes (the other clusters' health servers), the benchmark process (the changed cluster's backends, an RPC loop)",
			"clusters of 10 endpoints in watch mode; 10 reloads per size; reloaded = vigil's 'config reloaded' record;",
			"load+apply = from vigil's 'config file changed' record (after the debounce) to 'config reloaded';",
			"routable = the first RPC reaches the new endpoint; unroutable = the last RPC reached the removed one (0: none after the write)",
		},
		Command: e2e + " -bench Reload -benchtime 1x",
		LoadOf:  "BenchmarkReload",
	}
	t := Table{Columns: []Column{
		{Header: "reloaded p50 ms", Unit: "reload-p50-ms"},
		{Header: "max", Unit: "reload-max-ms"},
		{Header: "load+apply p50 ms", Unit: "apply-p50-ms"},
		{Header: "routable p50 ms", Unit: "added-p50-ms"},
		{Header: "max", Unit: "added-max-ms"},
		{Header: "unroutable p50 ms", Unit: "removed-p50-ms"},
		{Header: "max", Unit: "removed-max-ms"},
		{Header: "late", Unit: "late-rpcs"},
		{Header: "failed", Unit: "errors"},
	}}
	for _, size := range []int{100, 1000, 10000} {
		name := fmt.Sprintf("BenchmarkReload/%d", size)
		t.Rows = append(t.Rows, Row{Label: fmt.Sprintf("%d endpoints", size), Bench: name})
		label := fmt.Sprintf("%d endpoints: ", size)
		s.Figures = append(s.Figures,
			Figure{Label: label + "new endpoint routable, p50", Bench: name, Unit: "added-p50-ms", Show: " ms", Target: target(AtMost(100, " ms"))},
			Figure{Label: label + "new endpoint routable, max", Bench: name, Unit: "added-max-ms", Show: " ms", Target: target(AtMost(100, " ms"))},
			Figure{Label: label + "failed RPCs", Bench: name, Unit: "errors", Target: target(Zero())},
		)
	}
	s.Tables = []Table{t}
	return s
}
