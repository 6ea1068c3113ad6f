// This file is the client side of `udpfwd sessions`: it reads /sessions
// from a running udpfwd's admin listener and prints a table, or the JSON.

package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/udpfwd/udpfwd/internal/admin"
	"github.com/udpfwd/udpfwd/internal/cli"
)

// defaultAdminAddr is where `udpfwd sessions` looks for the admin listener
// unless told otherwise; it is the address the docs suggest for --admin.
const defaultAdminAddr = "127.0.0.1:9090"

// sessionsTimeout bounds the whole request. The listener itself gives each
// relay two seconds to answer.
const sessionsTimeout = 10 * time.Second

const sessionsUsageText = `udpfwd sessions: show a running udpfwd's live sessions

Usage:
  udpfwd sessions [--admin ADDR] [--admin-token-file FILE] [--relay NAME] [--json]

Reads /sessions from the admin listener (udpfwd --admin ADDR), every page of
it, sending the admin token if a file holding it is given. In the table,
IN is from the client towards upstream and OUT from upstream back to the
client; AGE is the session's age and IDLE-IN/IDLE-OUT the time since the
last datagram each way. UPSTREAM-PORT is the session's stable source port.
Static forwards (udpfwd -f) have no sessions: they follow in a table of
their own, with the last client that sent and the outbound socket (OUT).

Flags:
`

// runSessions is `udpfwd sessions ARGS...`; it returns the exit code: 0, 1
// when the listener cannot be reached or a relay did not answer, 2 for a
// wrong command line.
func runSessions(args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("udpfwd sessions")
	adminAddr := fs.String("admin", defaultAdminAddr, "the admin listener's `ip:port`, or http://host:port")
	relayName := fs.String("relay", "", "show only the relay `NAME`")
	asJSON := fs.Bool("json", false, "print the sessions as /sessions' JSON, every page in one")
	tokenFile := fs.String("admin-token-file", "", "send the admin token read from `FILE` (needed when udpfwd has one)")
	if err := cli.Parse(fs, args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(stdout, sessionsUsageText)
			cli.PrintFlags(stdout, fs)
			return 0
		}
		fmt.Fprintf(stderr, "udpfwd sessions: %s (see udpfwd sessions -h)\n", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "udpfwd sessions: unexpected argument %q (see udpfwd sessions -h)\n", fs.Arg(0))
		return 2
	}
	base, err := adminURL(*adminAddr)
	if err != nil {
		fmt.Fprintf(stderr, "udpfwd sessions: --admin: %v (see udpfwd sessions -h)\n", err)
		return 2
	}

	var token string
	if *tokenFile != "" {
		if token, err = admin.ReadTokenFile(*tokenFile); err != nil {
			fmt.Fprintf(stderr, "udpfwd sessions: %v\n", err)
			return 2
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), sessionsTimeout)
	defer cancel()
	reply, err := fetchAllSessions(ctx, base, *relayName, token)
	if err != nil {
		fmt.Fprintf(stderr, "udpfwd sessions: %s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
		return 1
	}
	if *asJSON {
		b, err := json.MarshalIndent(reply, "", "  ")
		if err != nil {
			fmt.Fprintf(stderr, "udpfwd sessions: %v\n", err)
			return 1
		}
		stdout.Write(append(b, '\n')) //nolint:errcheck // nothing to do about a closed stdout
	} else {
		printSessions(stdout, reply.Sessions, reply.Forwards)
	}
	for _, e := range reply.Errors {
		fmt.Fprintf(stderr, "udpfwd sessions: relay %s did not list its sessions: %s\n", e.Relay, e.Error)
	}
	if len(reply.Errors) > 0 {
		return 1
	}
	return 0
}

// adminURL turns --admin into the listener's base URL: "ip:port" means
// http://ip:port; a URL is taken as it is.
func adminURL(s string) (*url.URL, error) {
	if !strings.Contains(s, "://") {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return nil, fmt.Errorf("%q is not ip:port or a URL", s)
		}
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("%q is not ip:port or an http(s) URL", s)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return u, nil
}

// maxPages bounds how many pages `udpfwd sessions` follows: far more than
// a relay's session cap needs at the default page size, and an end to a
// listener whose "next" never ends.
const maxPages = 1000

// fetchAllSessions gets /sessions and every page after it, following each
// reply's "next", and returns them as one reply: the sessions of every page
// in order, the forwards (the first page has them), each failing relay
// once, the first page's time.
func fetchAllSessions(ctx context.Context, base *url.URL, relay, token string) (*admin.SessionsReply, error) {
	u := *base
	u.Path += "/sessions"
	if relay != "" {
		u.RawQuery = url.Values{"relay": {relay}}.Encode()
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	var all *admin.SessionsReply
	failed := map[string]bool{}
	for range maxPages {
		page, err := fetchSessions(ctx, client, &u, base.Host, token)
		if err != nil {
			return nil, err
		}
		if all == nil {
			all = &admin.SessionsReply{Time: page.Time, SnapshotTime: page.SnapshotTime, Sessions: []admin.SessionRecord{}}
		}
		all.Sessions = append(all.Sessions, page.Sessions...)
		all.Forwards = append(all.Forwards, page.Forwards...)
		for _, e := range page.Errors {
			if !failed[e.Relay] {
				failed[e.Relay] = true
				all.Errors = append(all.Errors, e)
			}
		}
		if page.Next == "" {
			return all, nil
		}
		ref, err := url.Parse(page.Next)
		if err != nil {
			return nil, fmt.Errorf("%s: next page %q is not a URL (is %s udpfwd's admin listener?)", u.String(), page.Next, base.Host)
		}
		u = *u.ResolveReference(ref)
	}
	return nil, fmt.Errorf("%s: more than %d pages (is %s udpfwd's admin listener?)", base.String(), maxPages, base.Host)
}

// fetchSessions gets one page of /sessions at u and decodes it.
func fetchSessions(ctx context.Context, client *http.Client, u *url.URL, host, token string) (*admin.SessionsReply, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the admin listener at %s: %s (is udpfwd running with --admin?)", host, reachError(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", u.String(), err)
	}
	if resp.StatusCode != http.StatusOK {
		var e admin.ErrorReply
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return nil, errors.New(e.Error)
		}
		if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			// udpfwd's own one-line refusals, such as a Host it does not serve
			line, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n")
			if line != "" && len(line) < 300 {
				return nil, fmt.Errorf("%s answered %s: %s", u.String(), resp.Status, line)
			}
		}
		return nil, fmt.Errorf("%s answered %s (is %s udpfwd's admin listener?)", u.String(), resp.Status, host)
	}
	var reply admin.SessionsReply
	if err := json.Unmarshal(body, &reply); err != nil {
		return nil, fmt.Errorf("%s: not a session list: %w (is %s udpfwd's admin listener?)", u.String(), err, host)
	}
	return &reply, nil
}

// reachError is the reason a request failed, without the URL and dial
// details that the caller already names: "connection refused".
func reachError(err error) string {
	var op *net.OpError
	var sys *os.SyscallError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "no answer within " + sessionsTimeout.String()
	case errors.As(err, &sys):
		return sys.Err.Error()
	case errors.As(err, &op) && op.Err != nil:
		return op.Err.Error()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// printSessions prints one aligned row per session, then, if there are
// any, one per static forward in a table of its own: a forward has no
// client ID and no upstream port of a client's own.
func printSessions(w io.Writer, sessions []admin.SessionRecord, forwards []admin.ForwardRecord) {
	if len(sessions) == 0 && len(forwards) == 0 {
		fmt.Fprintln(w, "no sessions")
		return
	}
	if len(sessions) > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "RELAY\tCLIENT\tB64\tCLIENT-ADDR\tUPSTREAM-PORT\tAGE\tIDLE-IN\tIDLE-OUT\tPKTS-IN\tPKTS-OUT\tBYTES-IN\tBYTES-OUT")
		for _, s := range sessions {
			port := s.UpstreamLocal
			if ap, err := netip.ParseAddrPort(s.UpstreamLocal); err == nil {
				port = strconv.Itoa(int(ap.Port()))
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n",
				s.Relay, s.ClientID, cmp.Or(s.ClientIDBase64, "-"), plainAddr(s.ClientAddr), port,
				humanDuration(s.AgeSeconds), humanDuration(s.IdleClientSeconds), humanDuration(s.IdleUpstreamSeconds),
				s.Datagrams.FromClient, s.Datagrams.FromUpstream,
				humanBytes(s.Bytes.FromClient), humanBytes(s.Bytes.FromUpstream))
		}
		tw.Flush()
	}
	if len(forwards) == 0 {
		return
	}
	if len(sessions) > 0 {
		fmt.Fprintln(w)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FORWARD\tRULE\tLISTEN\tLAST-CLIENT\tOUT\tUPSTREAM\tAGE\tIDLE-IN\tIDLE-OUT\tPKTS-IN\tPKTS-OUT\tBYTES-IN\tBYTES-OUT")
	for _, f := range forwards {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n",
			f.Relay, orDash(f.Rule), plainAddr(f.Listen), orDash(plainAddr(f.ClientAddr)), plainAddr(f.UpstreamLocal), plainAddr(f.Upstream),
			humanDuration(f.AgeSeconds), humanDuration(f.IdleClientSeconds), humanDuration(f.IdleUpstreamSeconds),
			f.Datagrams.FromClient, f.Datagrams.FromUpstream,
			humanBytes(f.Bytes.FromClient), humanBytes(f.Bytes.FromUpstream))
	}
	tw.Flush()
}

// plainAddr writes an address as the listener does, IPv4-mapped ones as
// IPv4 (a listener from before it unmapped them sent them mapped).
func plainAddr(s string) string {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return admin.AddrString(ap)
	}
	return s
}

// orDash is s, or "-" for nothing.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// humanBytes writes n in binary units: 512B, 1.5KiB, 20.0MiB.
func humanBytes(n uint64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return strconv.FormatUint(n, 10) + "B"
	}
	v, i := float64(n)/1024, 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + units[i:i+1] + "iB"
}

// humanDuration writes whole seconds in at most two units: 45s, 4m05s,
// 3h07m, 2d03h.
func humanDuration(seconds float64) string {
	s := int64(seconds)
	if s < 0 {
		s = 0
	}
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh%02dm", s/3600, s%3600/60)
	default:
		return fmt.Sprintf("%dd%02dh", s/86400, s%86400/3600)
	}
}
