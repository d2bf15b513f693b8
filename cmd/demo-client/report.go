package main

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vigil-proxy/vigil/internal/grpccode"
)

// maxErrorKinds bounds how many distinct errors a report line lists.
const maxErrorKinds = 3

// maxMessage bounds an error message in a report line, in bytes.
const maxMessage = 120

// noServerID counts successful calls whose response had no server_id.
const noServerID = "(no server_id)"

// tally counts the outcome of calls.
type tally struct {
	ok, failed int
	byServer   map[string]int // successful calls by server_id
	byError    map[string]int // failed calls by "CODE: message"
}

func newTally() tally {
	return tally{byServer: map[string]int{}, byError: map[string]int{}}
}

func (t *tally) add(serverID string, err error) {
	if err != nil {
		t.failed++
		t.byError[describeError(err)]++
		return
	}
	t.ok++
	if serverID == "" {
		serverID = noServerID
	}
	t.byServer[serverID]++
}

// recorder collects call outcomes from concurrent calls for the periodic
// report and the final total.
type recorder struct {
	mu     sync.Mutex
	period tally
	total  tally
}

func newRecorder() *recorder {
	return &recorder{period: newTally(), total: newTally()}
}

func (r *recorder) record(serverID string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.period.add(serverID, err)
	r.total.add(serverID, err)
}

// takePeriod returns the period's tally and starts a new one, plus every
// server_id seen so far, so that a backend that stopped answering shows up
// with 0 instead of vanishing from the line.
func (r *recorder) takePeriod() (period tally, seen []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	period, r.period = r.period, newTally()
	return period, sortedKeys(r.total.byServer)
}

// takeTotal returns the tally of every call so far.
func (r *recorder) takeTotal() tally {
	r.mu.Lock()
	defer r.mu.Unlock()
	total := newTally()
	total.ok, total.failed = r.total.ok, r.total.failed
	for k, v := range r.total.byServer {
		total.byServer[k] = v
	}
	for k, v := range r.total.byError {
		total.byError[k] = v
	}
	return total
}

// formatReport renders one report line:
//
//	client: 38 ok, 2 failed | demo-1=19 demo-2=0 demo-3=19 | 2 UNAVAILABLE: no healthy upstream in cluster demo
//
// servers lists the server_ids to show, in order, with 0 for those absent
// from t; the errors are listed most frequent first.
func formatReport(name string, t tally, servers []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d ok, %d failed", name, t.ok, t.failed)
	if len(servers) > 0 {
		b.WriteString(" |")
		for _, id := range servers {
			fmt.Fprintf(&b, " %s=%d", id, t.byServer[id])
		}
	}
	if len(t.byError) > 0 {
		kinds := sortedKeys(t.byError)
		slices.SortStableFunc(kinds, func(a, b string) int { return cmp.Compare(t.byError[b], t.byError[a]) })
		b.WriteString(" | ")
		for i, kind := range kinds {
			if i == maxErrorKinds {
				fmt.Fprintf(&b, "; and %d more kinds", len(kinds)-maxErrorKinds)
				break
			}
			if i > 0 {
				b.WriteString("; ")
			}
			fmt.Fprintf(&b, "%d %s", t.byError[kind], kind)
		}
	}
	return b.String()
}

// describeError renders a failed call as "CODE: message", the code in its
// canonical form (UNAVAILABLE, not Unavailable).
func describeError(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		st = status.New(codes.Unknown, err.Error())
	}
	msg := strings.Join(strings.Fields(st.Message()), " ")
	if len(msg) > maxMessage {
		msg = msg[:maxMessage] + "..."
	}
	if msg == "" {
		return grpccode.Name(st.Code())
	}
	return grpccode.Name(st.Code()) + ": " + msg
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareNatural)
	return keys
}

// compareNatural orders strings with their trailing numbers compared as
// numbers, so demo-2 comes before demo-10.
func compareNatural(a, b string) int {
	aStem, aNum := splitNumber(a)
	bStem, bNum := splitNumber(b)
	if aStem != bStem {
		return cmp.Compare(a, b)
	}
	if c := cmp.Compare(len(aNum), len(bNum)); c != 0 {
		return c
	}
	if c := cmp.Compare(aNum, bNum); c != 0 {
		return c
	}
	return cmp.Compare(a, b) // demo-01 and demo-1

}

// splitNumber splits s into a stem and a trailing run of digits without
// leading zeros (which would make the length comparison wrong).
func splitNumber(s string) (stem, number string) {
	i := len(s)
	for i > 0 && s[i-1] >= '0' && s[i-1] <= '9' {
		i--
	}
	stem, number = s[:i], strings.TrimLeft(s[i:], "0")
	return stem, number
}
