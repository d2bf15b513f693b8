package config

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/vigil-proxy/vigil/checker"
)

// Defaults, as documented in DESIGN.md's configuration section (and, for the
// listener limits, in config.example.yaml).
const (
	DefaultAdminAddress    = "127.0.0.1:9901"
	DefaultLogFormat       = LogText
	DefaultLogLevel        = "info"
	DefaultDrainDelay      = 0 * time.Second
	DefaultShutdownTimeout = 10 * time.Second
	DefaultProtocol        = ProtocolGRPC
	DefaultLBPolicy        = RoundRobin
	DefaultPanicThreshold  = 50
	DefaultWeight          = 1

	DefaultMaxConcurrentStreams = 100
	DefaultMaxMessageSize       = 32 << 20
	DefaultIdleTimeout          = time.Hour
	DefaultMaxConnections       = 10000

	DefaultTLSMinVersion       = TLS12
	DefaultTLSHandshakeTimeout = 10 * time.Second

	DefaultAccessLogFormat = LogJSON
	DefaultAccessLogBuffer = 4096
)

// Limits of the values vigil accepts.
const (
	MaxWeight = 10000
	// MinMessageSize is the smallest max_message_size: below it even gRPC
	// metadata-sized messages would fail, which is surely a typo.
	MinMessageSize = 1 << 10
	// MaxMessageSize is the largest max_message_size: gRPC frames a message
	// with a 32-bit length, and a single message of more than 1GiB through a
	// proxy is far more likely a mistake than a need.
	MaxMessageSize = 1 << 30
	// MaxNameLen bounds listener and cluster names, which appear in logs,
	// metrics labels and health service names.
	MaxNameLen = 128
	// MaxFileSize bounds the configuration file, so that a runaway file
	// cannot stall a reload; a 1,000-cluster configuration is about 1 MiB.
	MaxFileSize = 64 << 20
	// MinAccessLogBuffer and MaxAccessLogBuffer bound access_log.buffer
	// (records; one is about 250 bytes).
	MinAccessLogBuffer = 16
	MaxAccessLogBuffer = 1 << 20
)

// Allowed values of the enumerations, in the order error messages list them.
var (
	logFormats       = []string{string(LogText), string(LogJSON)}
	accessLogFormats = []string{string(LogJSON), string(LogText)}
	logLevels        = []string{"debug", "info", "warn", "error"}
	protocols        = []string{string(ProtocolGRPC), string(ProtocolTCP)}
	lbPolicies       = []string{string(RoundRobin), string(LeastRequest), string(Random), string(RingHash), string(Maglev), string(WeightedRoundRobin)}
	checkModes       = names(checker.Modes)
	onUnimplementeds = names(checker.OnUnimplementeds)
	livenesses       = names(checker.Livenesses)
	tlsVersions      = []string{string(TLS12), string(TLS13)}
)

// names are the values of a string enumeration as strings.
func names[S ~string](values []S) []string {
	out := make([]string, len(values))
	for i, v := range values {
		out[i] = string(v)
	}
	return out
}

// parseJitter parses a percentage "N%" (N may have a decimal part) into a
// fraction; its range is checker.Config's to judge.
func parseJitter(s string) (float64, error) {
	num, ok := strings.CutSuffix(s, "%")
	if !ok || num == "" || !isDecimal(num) {
		return 0, fmt.Errorf("invalid jitter %s: must be a percentage like 10%%", quote(s))
	}
	pct, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid jitter %s: must be a percentage like 10%%", quote(s))
	}
	return pct / 100, nil
}

// isDecimal reports whether s is digits with at most one inner decimal point
// (no sign, exponent, underscore, hex or infinity, which ParseFloat accepts).
func isDecimal(s string) bool {
	whole, frac, dotted := strings.Cut(s, ".")
	if whole == "" || !allDigits(whole) {
		return false
	}
	return !dotted || (frac != "" && allDigits(frac))
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// sizeUnits are the units of a size string; binary units only, since "MB"
// is ambiguous between 10^6 and 2^20 in common use.
var sizeUnits = map[string]int64{
	"B":   1,
	"KiB": 1 << 10,
	"MiB": 1 << 20,
	"GiB": 1 << 30,
}

// parseSize parses a byte size such as "4MiB", "512KiB", "1GiB", "1024B" or
// "1024" (bytes).
func parseSize(s string) (int64, error) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	num, unit := s[:i], strings.TrimPrefix(s[i:], " ")
	if num == "" {
		return 0, fmt.Errorf("invalid size %s: must be a number of bytes or a size like 4MiB, 512KiB, 1GiB", quote(s))
	}
	mult := int64(1)
	if unit != "" {
		var ok bool
		if mult, ok = sizeUnits[unit]; !ok {
			return 0, fmt.Errorf("invalid size %s: unknown unit %s (use B, KiB, MiB or GiB)", quote(s), quote(unit))
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n > (1<<62)/mult {
		return 0, fmt.Errorf("invalid size %s: too large", quote(s))
	}
	return n * mult, nil
}

// formatSize renders a byte count with the largest binary unit that divides
// it, for messages.
func formatSize(n int64) string {
	for _, u := range []struct {
		name string
		mult int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}

// Address rules. An endpoint needs a host and a port 1-65535; a listener or
// the admin server may leave the host empty (all interfaces) and use port 0
// (an ephemeral port, for tests).
type addressRule struct {
	allowEmptyHost bool
	allowPortZero  bool
}

var (
	endpointAddress = addressRule{}
	listenAddress   = addressRule{allowEmptyHost: true, allowPortZero: true}
)

// checkAddress validates a host:port address. The host may be an IP address
// (IPv6 in brackets) or a DNS name.
func checkAddress(s string, rule addressRule) error {
	if strings.Contains(s, "://") || strings.HasPrefix(s, "unix:") {
		return fmt.Errorf("invalid address %s: must be host:port, not a URL", quote(s))
	}
	if strings.ContainsAny(s, "/?#@ \t") {
		return fmt.Errorf("invalid address %s: must be host:port", quote(s))
	}
	host, port, err := splitHostPort(s)
	if err != nil {
		return fmt.Errorf("invalid address %s: %w", quote(s), err)
	}
	if !allDigits(port) || port == "" || len(port) > 5 {
		return fmt.Errorf("invalid address %s: port must be a number from %d to 65535", quote(s), portMin(rule))
	}
	p, _ := strconv.Atoi(port)
	if p > 65535 || (p == 0 && !rule.allowPortZero) {
		return fmt.Errorf("invalid address %s: port must be a number from %d to 65535", quote(s), portMin(rule))
	}
	if host == "" {
		if rule.allowEmptyHost {
			return nil
		}
		return fmt.Errorf("invalid address %s: missing host", quote(s))
	}
	if err := checkHost(host); err != nil {
		return fmt.Errorf("invalid address %s: %w", quote(s), err)
	}
	return nil
}

func portMin(rule addressRule) int {
	if rule.allowPortZero {
		return 0
	}
	return 1
}

// splitHostPort is net.SplitHostPort with messages that suit a config file.
func splitHostPort(s string) (host, port string, err error) {
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", "", errors.New("missing ']' after an IPv6 address")
		}
		host, rest := s[1:end], s[end+1:]
		if !strings.HasPrefix(rest, ":") {
			return "", "", errors.New("missing :port after the IPv6 address")
		}
		if _, err := netip.ParseAddr(host); err != nil || !strings.Contains(host, ":") {
			return "", "", fmt.Errorf("%s in brackets is not an IPv6 address", quote(host))
		}
		return host, rest[1:], nil
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return "", "", errors.New("must be host:port (missing port)")
	}
	host, port = s[:i], s[i+1:]
	if strings.Contains(host, ":") {
		return "", "", errors.New("an IPv6 address must be in brackets, like [::1]:8080")
	}
	return host, port, nil
}

// checkHost accepts an IPv4 address or a DNS name (RFC 1123 labels; '_' is
// allowed too, as some service discovery names use it).
func checkHost(host string) error {
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if len(host) > 253 {
		return errors.New("host name longer than 253 characters")
	}
	labels := strings.Split(strings.TrimSuffix(host, "."), ".")
	numeric := true
	for _, label := range labels {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("%s is not a valid host name", quote(host))
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
			if !ok {
				return fmt.Errorf("%s is not a valid host name", quote(host))
			}
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%s is not a valid host name", quote(host))
		}
		numeric = numeric && allDigits(label)
	}
	if numeric {
		// All-numeric labels look like an IPv4 address that failed to parse
		// (a resolver would treat such a name inconsistently).
		return fmt.Errorf("%s is not a valid IP address", quote(host))
	}
	return nil
}

// addressKey normalizes an address that passed checkAddress for duplicate
// detection: IP addresses in canonical form, names in lower case. Distinct
// spellings of one socket that need resolution (localhost vs 127.0.0.1) are
// not caught; the bind fails then, with the listener's position.
func addressKey(s string) string {
	host, port, err := splitHostPort(s)
	if err != nil {
		return s
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		host = ip.Unmap().String()
	} else {
		host = strings.ToLower(strings.TrimSuffix(host, "."))
	}
	p, _ := strconv.Atoi(port)
	return host + "|" + strconv.Itoa(p)
}

// checkName validates a listener or cluster name: it appears in log records,
// metrics labels and (for clusters) as a gRPC health service name, so it is
// kept to characters that need no quoting anywhere.
func checkName(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	if len(s) > MaxNameLen {
		return fmt.Errorf("longer than %d characters", MaxNameLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
		if !ok {
			return fmt.Errorf("invalid name %s: use letters, digits, '-', '_' and '.'", quote(s))
		}
	}
	return nil
}

// quote quotes s for a message, shortened (a fuzzer or a pasted blob should
// not produce megabyte-long error lines).
func quote(s string) string {
	return strconv.Quote(shorten(s))
}

// clean returns s shortened, and quoted if it holds anything unprintable, so
// a message never spans lines or carries control characters.
func clean(s string) string {
	s = shorten(s)
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// shorten cuts s to a length fit for a message.
func shorten(s string) string {
	const limit = 64
	if len(s) <= limit {
		return s
	}
	cut := limit
	for cut > 0 && s[cut]&0xC0 == 0x80 { // do not split a UTF-8 sequence
		cut--
	}
	return s[:cut] + "..."
}

// pathKey renders a mapping key as a path element: as is when it is a plain
// name, quoted otherwise.
func pathKey(key string) string {
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return quote(key)
		}
	}
	if key == "" {
		return `""`
	}
	return key
}

// suggest returns the candidate closest to word if it is close enough to be
// a plausible typo, or "".
func suggest(word string, candidates []string) string {
	if len(word) > 4*MaxNameLen {
		return ""
	}
	w := normalizeName(word)
	best, bestDist := "", -1
	for _, c := range candidates {
		if c == word {
			continue
		}
		nc := normalizeName(c)
		if nc == w {
			return c // differs only in case or separators: lb-policy, lbPolicy
		}
		limit := max(1, min(2, len(c)/3))
		if d := editDistance(w, nc, limit); d <= limit && (bestDist < 0 || d < bestDist) {
			best, bestDist = c, d
		}
	}
	return best
}

// normalizeName lowers s and drops '_' and '-', so that lb-policy, lbPolicy
// and lb_policy compare equal.
func normalizeName(s string) string {
	plain := true
	for i := 0; i < len(s) && plain; i++ {
		c := s[i]
		plain = c != '_' && c != '-' && (c < 'A' || c > 'Z')
	}
	if plain {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '_' || c == '-':
		case c >= 'A' && c <= 'Z':
			b = append(b, c+'a'-'A')
		default:
			b = append(b, c)
		}
	}
	return string(b)
}

// editDistance is the optimal string alignment distance between a and b
// (Levenshtein plus transpositions, so "wieght" is one edit from "weight"),
// or limit+1 when it is larger than limit, which bounds the work for long
// inputs.
func editDistance(a, b string, limit int) int {
	if d := len(a) - len(b); d > limit || -d > limit {
		return limit + 1
	}
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		rowMin := cur[0]
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
			rowMin = min(rowMin, cur[j])
		}
		if rowMin > limit {
			return limit + 1
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

// didYouMean formats a suggestion for a message, or "".
func didYouMean(word string, candidates []string) string {
	if s := suggest(word, candidates); s != "" {
		return fmt.Sprintf("; did you mean %q?", s)
	}
	return ""
}

// checkLabel validates a Kubernetes object name that must be a DNS label:
// a Service name (RFC 1035: starts with a letter) or a namespace (RFC 1123).
func checkLabel(s string, mustStartWithLetter bool) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	if len(s) > 63 {
		return errors.New("longer than 63 characters")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return errors.New("use lower-case letters, digits and '-'")
		}
	}
	if s[0] == '-' || s[len(s)-1] == '-' {
		return errors.New("must start and end with a letter or digit")
	}
	if mustStartWithLetter && !(s[0] >= 'a' && s[0] <= 'z') {
		return errors.New("must start with a letter")
	}
	return nil
}

// checkPortName validates a Kubernetes port name (an IANA service name):
// at most 15 lower-case letters, digits and '-', with a letter, and no '-'
// at either end or next to another.
func checkPortName(s string) error {
	if len(s) > 15 {
		return errors.New("longer than 15 characters")
	}
	letter := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z':
			letter = true
		case c >= '0' && c <= '9':
		case c == '-':
			if i == 0 || i == len(s)-1 || s[i-1] == '-' {
				return errors.New("'-' may not start, end or double")
			}
		default:
			return errors.New("use lower-case letters, digits and '-'")
		}
	}
	if !letter {
		return errors.New("needs a letter")
	}
	return nil
}

// MaxHeaderLen bounds hash.header: longer metadata keys are not a thing
// anyone sends.
const MaxHeaderLen = 256

// checkMetadataKey checks a gRPC metadata key (the hash header): the
// characters gRPC allows in one (letters, digits, '-', '_', '.'; upper case
// is taken as lower case, as HTTP/2 carries it), and no pseudo-header
// (":authority" and the like are not metadata).
func checkMetadataKey(s string) error {
	switch {
	case s == "":
		return errors.New("must not be empty")
	case s[0] == ':':
		return fmt.Errorf("%s is an HTTP/2 pseudo-header, not gRPC metadata", quote(s))
	case len(s) > MaxHeaderLen:
		return fmt.Errorf("longer than %d characters", MaxHeaderLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
		if !ok {
			return fmt.Errorf("invalid gRPC metadata key %s: use letters, digits, '-', '_' and '.'", quote(s))
		}
	}
	return nil
}
