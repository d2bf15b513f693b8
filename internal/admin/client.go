package admin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client talks to a vigil admin API.
type Client struct {
	base string
	http *http.Client
}

// NewClient returns a client for the admin API at addr: host:port (as in
// admin.address) or an http:// or https:// URL; "" is DefaultAddress.
func NewClient(addr string) (*Client, error) {
	if addr == "" {
		addr = DefaultAddress
	}
	if !strings.Contains(addr, "://") {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("admin address %q: want host:port or a URL: %w", addr, err)
		}
		if host == "" {
			host = "127.0.0.1"
		}
		addr = "http://" + net.JoinHostPort(host, port)
	}
	u, err := url.Parse(addr)
	if err != nil {
		return nil, fmt.Errorf("admin address %q: %w", addr, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("admin address %q: want host:port or an http:// URL", addr)
	}
	// No overall timeout: an event stream lasts. Requests carry contexts.
	return &Client{base: strings.TrimRight(u.String(), "/"), http: &http.Client{}}, nil
}

// Base is the API's base URL, e.g. http://127.0.0.1:9901.
func (c *Client) Base() string { return c.base }

// Clusters asks GET /clusters and returns the decoded answer and its raw
// JSON.
func (c *Client) Clusters(ctx context.Context) (*ClustersResponse, []byte, error) {
	body, err := c.get(ctx, "/clusters")
	if err != nil {
		return nil, nil, err
	}
	var resp ClustersResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		return nil, nil, fmt.Errorf("decode %s/clusters: %w", c.base, err)
	}
	return &resp, body, nil
}

// Ready asks GET /ready.
func (c *Client) Ready(ctx context.Context) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/ready", nil)
	if err != nil {
		return false, fmt.Errorf("request %s/ready: %w", c.base, err)
	}
	res, err := c.http.Do(req)
	if err != nil {
		return false, c.unreachable(err)
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 1<<10))
	switch res.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusServiceUnavailable:
		return false, nil
	}
	return false, fmt.Errorf("GET %s/ready: %s", c.base, res.Status)
}

// maxBody bounds an answer read into memory (a /clusters of tens of
// thousands of endpoints fits).
const maxBody = 64 << 20

func (c *Client) get(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return nil, fmt.Errorf("request %s%s: %w", c.base, path, err)
	}
	res, err := c.http.Do(req)
	if err != nil {
		return nil, c.unreachable(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("read %s%s: %w", c.base, path, err)
	}
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s%s: %s: %s", c.base, path, res.Status, bytes.TrimSpace(body))
	}
	return body, nil
}

// unreachable explains a failed request in terms an operator can act on.
func (c *Client) unreachable(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("vigil admin API at %s did not answer: %w", c.base, err)
	}
	return fmt.Errorf("cannot reach the vigil admin API at %s (is vigil running, with admin.address set to it?): %w", c.base, err)
}

// Event is one record of the eviction log as GET /events delivers it.
type Event struct {
	// Seq numbers the events of one vigil process from 1.
	Seq   uint64
	Time  time.Time
	Level string
	Msg   string
	// Attrs are the record's other keys, in order.
	Attrs []Attr
	// Data is the record as the JSON log prints it.
	Data json.RawMessage
}

// Attr is one key of an event with its JSON value.
type Attr struct {
	Key   string
	Value json.RawMessage
}

// String is the value as text: a JSON string unquoted, anything else as
// JSON.
func (a Attr) String() string {
	var s string
	if json.Unmarshal(a.Value, &s) == nil {
		return s
	}
	return string(a.Value)
}

// Attr returns the text of the event's key, or "".
func (e Event) Attr(key string) string {
	for _, a := range e.Attrs {
		if a.Key == key {
			return a.String()
		}
	}
	return ""
}

// EventsOptions say where a stream of events starts.
type EventsOptions struct {
	// After resumes after the event of that number (Last-Event-ID); 0
	// starts with a replay.
	After uint64
	// Replay is how many recent events to replay when After is 0;
	// negative means the server's default.
	Replay int
	// Connected, if set, is called once the stream is open.
	Connected func()
}

// Events follows GET /events, calling fn for every event in order, until
// ctx ends (then it returns nil), fn returns an error, or the stream
// breaks (then it returns why).
func (c *Client) Events(ctx context.Context, opts EventsOptions, fn func(Event) error) error {
	path := "/events"
	if opts.After == 0 && opts.Replay >= 0 {
		path += "?replay=" + strconv.Itoa(opts.Replay)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return fmt.Errorf("request %s%s: %w", c.base, path, err)
	}
	req.Header.Set("Accept", "text/event-stream")
	if opts.After > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatUint(opts.After, 10))
	}
	res, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return c.unreachable(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(res.Body, 1<<10))
		return fmt.Errorf("GET %s%s: %s: %s", c.base, path, res.Status, bytes.TrimSpace(body))
	}
	if opts.Connected != nil {
		opts.Connected()
	}
	err = readEvents(res.Body, fn)
	if ctx.Err() != nil {
		return nil
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("event stream from %s: %w", c.base, err)
}

// readEvents parses a text/event-stream: fields up to a blank line make an
// event; comments, retry and unknown fields are skipped.
func readEvents(r io.Reader, fn func(Event) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	var id string
	var data []byte
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			if len(data) > 0 {
				ev, err := parseEvent(id, data)
				if err != nil {
					return err
				}
				if err := fn(ev); err != nil {
					return err
				}
			}
			id, data = "", data[:0]
			continue
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "id":
			id = string(value)
		case "data":
			if len(data) > 0 {
				data = append(data, '\n')
			}
			data = append(data, value...)
		}
	}
	return sc.Err()
}

// parseEvent decodes one event's data: a JSON log record whose keys keep
// their order.
func parseEvent(id string, data []byte) (Event, error) {
	ev := Event{Data: json.RawMessage(bytes.Clone(data))}
	if id != "" {
		seq, err := strconv.ParseUint(id, 10, 64)
		if err != nil {
			return ev, fmt.Errorf("event id %q: %w", id, err)
		}
		ev.Seq = seq
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return ev, fmt.Errorf("event %s: data is not a JSON object: %.80s", id, data)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return ev, fmt.Errorf("event %s: %w", id, err)
		}
		key, _ := tok.(string)
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return ev, fmt.Errorf("event %s: key %s: %w", id, key, err)
		}
		a := Attr{Key: key, Value: value}
		switch key {
		case "time":
			if t, err := time.Parse(time.RFC3339Nano, a.String()); err == nil {
				ev.Time = t
				continue
			}
		case "level":
			ev.Level = a.String()
			continue
		case "msg":
			ev.Msg = a.String()
			continue
		}
		ev.Attrs = append(ev.Attrs, a)
	}
	return ev, nil
}
