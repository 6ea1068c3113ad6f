package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/udpfwd/udpfwd/internal/fileio"
)

// hostPolicy decides which Host headers the listener answers. A web page
// can make a browser send requests to the listener by resolving its own
// name to the listener's address (DNS rebinding); those requests carry the
// page's name in Host, which is none of the names below.
type hostPolicy struct {
	any   bool            // "*" was allowed
	own   netip.Addr      // the listener's address
	wild  bool            // the listener's address is 0.0.0.0 or [::]
	names map[string]bool // Options.AllowedHosts, normalised
}

func newHostPolicy(ln net.Addr, allowed []string) hostPolicy {
	p := hostPolicy{names: map[string]bool{}}
	if ta, ok := ln.(*net.TCPAddr); ok {
		p.own = ta.AddrPort().Addr().Unmap()
		p.wild = p.own.IsUnspecified()
	}
	for _, h := range allowed {
		if h == "*" {
			p.any = true
			continue
		}
		p.names[hostName(h)] = true
	}
	return p
}

// hostName is the host part of a Host header or an allowed host: without
// the port and the brackets of an IPv6 literal, lower-case, without a
// trailing dot.
func hostName(h string) string {
	if strings.HasPrefix(h, "[") {
		if end := strings.IndexByte(h, ']'); end > 0 {
			h = h[1:end]
		}
	} else if i := strings.LastIndexByte(h, ':'); i >= 0 && strings.Count(h, ":") == 1 {
		h = h[:i]
	}
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// allows reports whether a request with this Host header is answered. An
// empty Host (HTTP/1.0 without one) is answered: a browser always sends one.
// With a wildcard listening address any IP literal is answered: rebinding
// needs a name, and a page whose origin is an IP address of this host is
// this host's.
func (p hostPolicy) allows(host string) bool {
	if p.any || host == "" {
		return true
	}
	h := hostName(host)
	if h == "localhost" || p.names[h] {
		return true
	}
	ip, err := netip.ParseAddr(h)
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	return ip.IsLoopback() || ip == p.own || (p.wild && ip.Zone() == "")
}

// checkHost answers 421 to a request whose Host the policy does not allow.
func (s *Server) checkHost(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.hosts.allows(r.Host) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusMisdirectedRequest)
			fmt.Fprintf(w, "host %q is not served here: use the listener's address or localhost, or allow the name in the admin listener's allowed hosts\n", r.Host)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// requireToken answers 401 to a request without the bearer token, when
// one is configured.
func (s *Server) requireToken(next http.Handler) http.Handler {
	if s.opts.Token == "" {
		return next
	}
	want := sha256.Sum256([]byte(s.opts.Token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		// Hashing first makes the comparison's time independent of the
		// length of what was sent, too.
		got := sha256.Sum256([]byte(strings.TrimSpace(token)))
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="udpfwd admin"`)
			writeJSON(w, http.StatusUnauthorized, ErrorReply{Error: "this needs the admin token: Authorization: Bearer TOKEN (udpfwd sessions --admin-token-file FILE)"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// maxTokenFile bounds a token file: a token is a line, not a document.
const maxTokenFile = 4096

// ReadTokenFile reads the admin token from path: the file's content
// without surrounding white space. It refuses anything that is not a
// regular file (it never blocks on a FIFO), a file over 4 KiB, an empty
// token and one with spaces or control characters inside.
func ReadTokenFile(path string) (string, error) {
	b, err := fileio.ReadFile(path, maxTokenFile)
	if err != nil {
		return "", fmt.Errorf("admin token file %w", err)
	}
	token := strings.TrimSpace(string(b))
	if token == "" {
		return "", fmt.Errorf("admin token file %s: empty", path)
	}
	if err := validToken(token); err != nil {
		return "", fmt.Errorf("admin token file %s: %w", path, err)
	}
	return token, nil
}

// validToken accepts what can be sent in an Authorization header as one
// word: printable ASCII without spaces. The empty token means none.
func validToken(t string) error {
	for i := 0; i < len(t); i++ {
		if c := t[i]; c <= ' ' || c > '~' {
			return errors.New("the token must be printable ASCII without spaces")
		}
	}
	return nil
}
