package gateway

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/fstest"
)

func TestPageHandlerServesEmbeddedFiles(t *testing.T) {
	h, err := newPageHandler(webFiles, "web")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ path, ctype, contains string }{
		{"/", "text/html; charset=utf-8", "<title>gavel</title>"},
		{"/index.html", "text/html; charset=utf-8", "<title>gavel</title>"},
		{"/app.js", "text/javascript; charset=utf-8", "new WebSocket("},
		{"/style.css", "text/css; charset=utf-8", "#status"},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, c.path, nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s: %d", c.path, rec.Code)
		}
		hd := rec.Header()
		if got := hd.Get("Content-Type"); got != c.ctype {
			t.Errorf("GET %s: Content-Type %q, want %q", c.path, got, c.ctype)
		}
		if got := hd.Get("Cache-Control"); got != "no-cache" {
			t.Errorf("GET %s: Cache-Control %q, want no-cache", c.path, got)
		}
		if hd.Get("Last-Modified") != "" {
			t.Errorf("GET %s: Last-Modified %q; embedded files have no time", c.path, hd.Get("Last-Modified"))
		}
		if !strings.Contains(rec.Body.String(), c.contains) {
			t.Errorf("GET %s: body lacks %q", c.path, c.contains)
		}
		etag := hd.Get("ETag")
		if !strings.HasPrefix(etag, `"`) {
			t.Fatalf("GET %s: ETag %q", c.path, etag)
		}
		// A revalidation with the same ETag is a 304 without a body.
		req := httptest.NewRequest(http.MethodGet, c.path, nil)
		req.Header.Set("If-None-Match", etag)
		rec = httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusNotModified || rec.Body.Len() != 0 {
			t.Errorf("GET %s If-None-Match %s: %d with %d bytes, want 304 and none", c.path, etag, rec.Code, rec.Body.Len())
		}
	}

	for _, c := range []struct {
		method, path string
		code         int
	}{
		{http.MethodGet, "/nope.js", http.StatusNotFound},
		{http.MethodGet, "/web/app.js", http.StatusNotFound},
		{http.MethodGet, "/ws/x", http.StatusNotFound},
		{http.MethodPost, "/", http.StatusMethodNotAllowed},
		{http.MethodHead, "/app.js", http.StatusOK},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(c.method, c.path, nil))
		if rec.Code != c.code {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, rec.Code, c.code)
		}
	}

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "connect-src 'self'") {
		t.Errorf("page CSP %q does not allow its own WebSocket", csp)
	}
	// The gateway's "/" is this page.
	rec = httptest.NewRecorder()
	pageHandler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "<title>gavel</title>") {
		t.Errorf("pageHandler GET /: %d, not the page", rec.Code)
	}
}

func TestPageHandlerRefusesUnknownKinds(t *testing.T) {
	fsys := fstest.MapFS{
		"web/index.html": {Data: []byte("<p>hi</p>")},
		"web/data.bin":   {Data: []byte{0}},
	}
	if _, err := newPageHandler(fsys, "web"); err == nil || !strings.Contains(err.Error(), "data.bin") {
		t.Errorf("a file of unknown kind: err %v, want one naming it", err)
	}
	if _, err := newPageHandler(fstest.MapFS{"web/app.js": {Data: []byte("")}}, "web"); err == nil {
		t.Error("no index.html: no error")
	}
}

// /debug/pprof/ is served only when Options.Pprof asks for it.
func TestPprofOnlyWhenAsked(t *testing.T) {
	for _, on := range []bool{false, true} {
		g, err := New(Options{ID: "g1", Nodes: []string{"127.0.0.1:1"}, Pprof: on})
		if err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		g.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/debug/pprof/", nil))
		if got := rec.Code == 200 && strings.Contains(rec.Body.String(), "goroutine"); got != on {
			t.Errorf("Pprof %v: /debug/pprof/ = %d", on, rec.Code)
		}
	}
}
