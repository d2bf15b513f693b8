package admin

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"html/template"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The status page: GET / (for a browser; other clients get the API's
// index as text), its assets under /ui/, and its live stream /ui/stream
// (page_stream.go), fed by the hub (page_hub.go).
//
// The page is read-only and has no third-party code. The HTML is rendered
// by html/template, which escapes every value for its context; the script
// builds the live view with textContent and createElement only, never
// from markup, and the Content-Security-Policy forbids inline script and
// style, any other origin, and (Trusted Types) assigning strings to
// innerHTML, so a value that slipped through could not run anyway.
// Without JavaScript the page is a table rendered on the server, filtered
// and paginated by query parameters.

//go:embed page
var pageFiles embed.FS

var (
	pageTemplate = template.Must(template.New("index.html").Funcs(template.FuncMap{
		"ago": ago,
		"ms":  latencyText,
	}).ParseFS(pageFiles, "page/index.html"))
	// pageAssets are the files under /ui/, and pageAssetVersion a hash of
	// them all, appended to their URLs so that a browser caches each
	// version for good and never mixes two.
	pageAssets       = loadAssets()
	pageAssetVersion = assetVersion(pageAssets)
)

type pageAsset struct {
	body        []byte
	contentType string
}

func loadAssets() map[string]pageAsset {
	out := map[string]pageAsset{}
	err := fs.WalkDir(pageFiles, "page", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || path.Ext(p) == ".html" {
			return err
		}
		b, err := pageFiles.ReadFile(p)
		if err != nil {
			return err
		}
		out[strings.TrimPrefix(p, "page/")] = pageAsset{body: b, contentType: mime.TypeByExtension(path.Ext(p))}
		return nil
	})
	if err != nil {
		panic(err) // the files are embedded: this cannot fail at run time
	}
	return out
}

func assetVersion(assets map[string]pageAsset) string {
	h := sha256.New()
	names := make([]string, 0, len(assets))
	for n := range assets {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		io.WriteString(h, n)
		h.Write(assets[n].body)
	}
	if t, err := pageFiles.ReadFile("page/index.html"); err == nil {
		h.Write(t)
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// PageAssetsVersion is the hash of the status page's files: the browser
// test stamps it into the README's screenshot, so that a screenshot older
// than the page is noticed.
func PageAssetsVersion() string { return pageAssetVersion }

// pageCSP is the status page's Content-Security-Policy: its own script,
// style, images and stream, nothing inline, nothing from elsewhere, no
// frames, no plugins, and Trusted Types so that no string can become
// markup through a DOM sink.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; " +
	"require-trusted-types-for 'script'; trusted-types 'none'"

func setPageSecurityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
}

// wantsHTML reports whether the client asked for HTML (a browser does;
// curl's */* does not), so that `curl ADMIN/` keeps printing the index.
func wantsHTML(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, _, _ := mime.ParseMediaType(strings.TrimSpace(part))
		if mt == "text/html" || mt == "application/xhtml+xml" {
			return true
		}
	}
	return false
}

// pagePageSize is how many endpoint rows the server-rendered table shows
// at once.
const pagePageSize = 200

// pageView is what the template renders.
type pageView struct {
	Version  string
	Now      time.Time
	Clusters []pageClusterView
	Rows     []pageRowView
	Query    string
	Problems bool
	Page     int
	Pages    int
	Matched  int
	Total    int
	PrevURL  string
	NextURL  string
	Log      []pageLogView
}

type pageClusterView struct {
	Cluster
	Unhealthy int
}

type pageRowView struct {
	Cluster string
	Endpoint
}

type pageLogView struct {
	Time, Level, Msg, Cluster, Endpoint, Reason, Hint, Error string
}

func (s *Server) page(w http.ResponseWriter, r *http.Request) {
	if !wantsHTML(r) {
		s.index(w, r)
		return
	}
	resp, err := s.snapshotClusters()
	if err != nil {
		s.log.Error("admin: read clusters", "err", err)
		http.Error(w, "read clusters: "+err.Error(), http.StatusInternalServerError)
		return
	}
	q := r.URL.Query()
	v := pageView{
		Version:  pageAssetVersion,
		Now:      time.Now(),
		Query:    strings.TrimSpace(q.Get("q")),
		Problems: q.Get("problems") != "",
	}
	needle := strings.ToLower(v.Query)
	var rows []pageRowView
	for _, c := range resp.Clusters {
		v.Clusters = append(v.Clusters, pageClusterView{Cluster: c, Unhealthy: c.Total - c.Healthy})
		for _, e := range c.Endpoints {
			v.Total++
			if v.Problems && e.Health == "healthy" {
				continue
			}
			if needle != "" && !strings.Contains(strings.ToLower(c.Name+" "+e.Address+" "+e.Health+" "+e.Reason), needle) {
				continue
			}
			rows = append(rows, pageRowView{Cluster: c.Name, Endpoint: e})
		}
	}
	v.Matched = len(rows)
	v.Pages = max(1, (len(rows)+pagePageSize-1)/pagePageSize)
	v.Page, _ = strconv.Atoi(q.Get("page"))
	v.Page = min(max(v.Page, 1), v.Pages)
	lo := (v.Page - 1) * pagePageSize
	v.Rows = rows[lo:min(lo+pagePageSize, len(rows))]
	link := func(page int) string {
		u := *r.URL
		qq := u.Query()
		qq.Set("page", strconv.Itoa(page))
		u.RawQuery = qq.Encode()
		return u.RequestURI()
	}
	if v.Page > 1 {
		v.PrevURL = link(v.Page - 1)
	}
	if v.Page < v.Pages {
		v.NextURL = link(v.Page + 1)
	}
	v.Log = s.pageHub().tail(25)

	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	setPageSecurityHeaders(h)
	if err := pageTemplate.Execute(w, &v); err != nil {
		s.log.Debug("admin: render status page", "err", err)
	}
}

// pageAsset serves GET /ui/{file}.
func (s *Server) pageAsset(w http.ResponseWriter, r *http.Request) {
	a, ok := pageAssets[r.PathValue("file")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	setPageSecurityHeaders(h)
	if r.URL.Query().Get("v") == pageAssetVersion {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		h.Set("Cache-Control", "no-cache")
	}
	_, _ = w.Write(a.body)
}

// tail returns the newest n records of the eviction log for the
// server-rendered page, newest first.
func (h *pageHub) tail(n int) []pageLogView {
	h.mu.Lock()
	recs := h.log[max(0, len(h.log)-n):]
	recs = append([]hubRecord(nil), recs...)
	h.mu.Unlock()
	out := make([]pageLogView, 0, len(recs))
	for i := len(recs) - 1; i >= 0; i-- {
		var m map[string]any
		if json.Unmarshal(recs[i].data, &m) != nil {
			continue
		}
		str := func(k string) string {
			switch x := m[k].(type) {
			case nil:
				return ""
			case string:
				return x
			default:
				b, _ := json.Marshal(x)
				return string(b)
			}
		}
		t := str("time")
		if ts, err := time.Parse(time.RFC3339Nano, t); err == nil {
			t = ts.Local().Format("15:04:05.000")
		}
		out = append(out, pageLogView{
			Time: t, Level: str("level"), Msg: str("msg"), Cluster: str("cluster"), Endpoint: str("endpoint"),
			Reason: str("reason"), Hint: str("hint"), Error: str("error"),
		})
	}
	return out
}

// pageHub returns the server's hub, starting it on first use; Shutdown
// stops it.
func (s *Server) pageHub() *pageHub {
	s.hubOnce.Do(func() {
		s.hub = newPageHub(pageHubOptions{
			store:   s.opts.Store,
			build:   s.cluster,
			traffic: s.opts.Traffic,
			log:     s.log,
		})
		s.hubDone = make(chan struct{})
		go func() {
			defer close(s.hubDone)
			s.hub.run(s.ctx)
		}()
	})
	return s.hub
}

// stopPageHub waits for the hub started by pageHub, if any, once the
// server's context is cancelled.
func (s *Server) stopPageHub() {
	s.hubOnce.Do(func() {}) // none may start from now on
	if s.hubDone != nil {
		<-s.hubDone
	}
}

// pageHubState is the part of Server the status page owns.
type pageHubState struct {
	hubOnce sync.Once
	hub     *pageHub
	hubDone chan struct{}
}

func ago(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := now.Sub(t).Round(time.Second)
	switch {
	case d < time.Minute:
		return strconv.Itoa(int(d.Seconds())) + "s"
	case d < time.Hour:
		return strconv.Itoa(int(d.Minutes())) + "m" + strconv.Itoa(int(d.Seconds())%60) + "s"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d.Hours())) + "h" + strconv.Itoa(int(d.Minutes())%60) + "m"
	default:
		return strconv.Itoa(int(d.Hours()/24)) + "d"
	}
}

func latencyText(ms *float64) string {
	if ms == nil {
		return ""
	}
	return strconv.FormatFloat(*ms, 'f', 2, 64) + " ms"
}
