package gateway

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// The web page: plain HTML, CSS and JavaScript in web/, embedded into the
// binary and served at / (index.html) and /NAME (the other files). The page
// speaks the /ws protocol of docs/gateway.md; app.js documents the element
// ids and data attributes it keeps stable for tests.

//go:embed web
var webFiles embed.FS

// embeddedPage serves the embedded files; built once, at start-up.
var embeddedPage = func() http.Handler {
	h, err := newPageHandler(webFiles, "web")
	if err != nil {
		panic(err) // the embedded files are fixed at build time; page_test.go loads them
	}
	return h
}()

// PageHandler returns the handler of the web page embedded in the binary:
// index.html at / (and /index.html), app.js and style.css under their
// names, 404 for anything else.
func PageHandler() http.Handler { return embeddedPage }

func init() { pageHandler = PageHandler() }

// pageTypes are the content types of the page's files, by extension; a
// file of another kind is refused when the handler is built, so a new
// asset cannot go out with a content type sniffed by the browser.
var pageTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
	".ico":  "image/x-icon",
	".json": "application/json",
}

// pageCSP keeps the page to its own origin: its scripts, styles and the
// WebSocket on the same host (the icon is an inline data: URL).
const pageCSP = "default-src 'self'; connect-src 'self'; img-src 'self' data:; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// pageAsset is one file of the page, ready to serve.
type pageAsset struct {
	name        string
	body        []byte
	contentType string
	etag        string
}

// newPageHandler serves the files under dir of fsys: dir/index.html at /
// (and /index.html), every other file at /NAME. Responses carry an exact
// content type, a strong ETag of the content and Cache-Control: no-cache,
// so browsers revalidate on every load (a cheap 304) and never keep a page
// of an older binary.
func newPageHandler(fsys fs.FS, dir string) (http.Handler, error) {
	assets := map[string]*pageAsset{}
	err := fs.WalkDir(fsys, dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ct, ok := pageTypes[path.Ext(p)]
		if !ok {
			return fmt.Errorf("page: no content type for %s", p)
		}
		body, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		name := strings.TrimPrefix(p, dir+"/")
		assets["/"+name] = &pageAsset{name: name, body: body, contentType: ct,
			etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		return nil
	})
	if err != nil {
		return nil, err
	}
	index, ok := assets["/index.html"]
	if !ok {
		return nil, fmt.Errorf("page: no %s/index.html", dir)
	}
	assets["/"] = index
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, ok := assets[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Type", a.contentType)
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", a.etag)
		h.Set("X-Content-Type-Options", "nosniff")
		// The page's URL may hold ?token=: never send it on as a referrer.
		h.Set("Referrer-Policy", "no-referrer")
		if strings.HasSuffix(a.name, ".html") {
			h.Set("Content-Security-Policy", pageCSP)
		}
		// A zero modification time: ServeContent answers If-None-Match
		// with the ETag and sends no Last-Modified.
		http.ServeContent(w, r, a.name, time.Time{}, bytes.NewReader(a.body))
	}), nil
}
