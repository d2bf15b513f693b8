package metrics

// codeNames are the canonical gRPC status code names, indexed by code: the
// only values of vigil_upstream_rq_total{code}.
var codeNames = [...]string{
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
	"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
	"UNAUTHENTICATED",
}

const (
	numCodes    = len(codeNames)
	codeUnknown = 2
)

var codeIndexes = func() map[string]int {
	m := make(map[string]int, numCodes)
	for i, n := range codeNames {
		m[n] = i
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
