package metrics

import (
	"google.golang.org/grpc/codes"

	"github.com/vigil-proxy/vigil/internal/grpccode"
)

// numCodes bounds vigil_upstream_rq_total{code}: the codes of the
// specification, by their canonical names.
const (
	numCodes    = grpccode.Count
	codeUnknown = int(codes.Unknown)
)

// codeName is the label value of code index i.
func codeName(i int) string { return grpccode.Name(codes.Code(i)) }

var codeIndexes = func() map[string]int {
	m := make(map[string]int, numCodes)
	for i := range numCodes {
		m[codeName(i)] = i
	}
	return m
}()

// codeIndex maps a code name to its index; anything else counts as
// UNKNOWN, which is how gRPC says to treat codes it does not know, and
// keeps the label set bounded whatever a caller passes.
func codeIndex(name string) int {
	if i, ok := codeIndexes[name]; ok {
		return i
	}
	return codeUnknown
}

// healthReasons are the reasons a probe can give besides the code names.
var healthReasons = map[string]bool{"NOT_SERVING": true, "SERVICE_UNKNOWN": true}

// reasonOther stands for a reason outside the known set.
const reasonOther = "OTHER"

// reasonLabel bounds the values of the reason labels: the health statuses
// and the code names pass, anything else is OTHER.
func reasonLabel(reason string) string {
	if _, ok := codeIndexes[reason]; ok || healthReasons[reason] {
		return reason
	}
	return reasonOther
}
