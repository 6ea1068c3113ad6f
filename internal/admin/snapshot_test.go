package admin_test

import (
	"context"
	"encoding/json"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/udpfwd/udpfwd/internal/admin"
	"github.com/udpfwd/udpfwd/internal/stats"
	"github.com/udpfwd/udpfwd/internal/wgproto"
)

// countingRelay counts AdminSessions calls; while gate is open (not
// closed), calls wait for it, so that requests pile up on one listing.
type countingRelay struct {
	name     string
	counters stats.Counters
	sessions []admin.Session
	calls    atomic.Int32
	called   chan struct{} // gets a value per call, if not full
	gate     chan struct{} // calls wait until it is closed; nil: no wait
}

func (c *countingRelay) Name() string              { return c.name }
func (c *countingRelay) Counters() *stats.Counters { return &c.counters }
func (c *countingRelay) AdminSessions(ctx context.Context) ([]admin.Session, error) {
	c.calls.Add(1)
	select {
	case c.called <- struct{}{}:
	default:
	}
	if c.gate != nil {
		select {
		case <-c.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return c.sessions, nil
}

// clock is a settable clock for Options.Now.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock { c := &clock{}; c.ns.Store(t.UnixNano()); return c }
func (c *clock) now() time.Time   { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) add(d time.Duration) {
	c.ns.Add(int64(d))
}

// sessionsOf returns n sessions with distinct client IDs, out of order.
func sessionsOf(n int, seed byte) []admin.Session {
	ss := make([]admin.Session, n)
	for i := range ss {
		id := wgproto.ClientID{seed, byte(n - i), 1}
		ss[i] = session(byte(i), id, "127.0.0.1:7000", uint16(40000+i), uint64(i))
	}
	return ss
}

func decodeReply(t *testing.T, body string) admin.SessionsReply {
	t.Helper()
	var r admin.SessionsReply
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	return r
}

// TestConcurrentRequestsShareOneSnapshot: requests that arrive while a
// relay is being listed, and within the snapshot interval after, cost the
// relay one listing.
func TestConcurrentRequestsShareOneSnapshot(t *testing.T) {
	clk := newClock(t0)
	r := &countingRelay{name: "warp", sessions: sessionsOf(3, 7), called: make(chan struct{}, 1), gate: make(chan struct{})}
	_, base := start(t, []admin.Relay{r}, admin.Options{Now: clk.now})

	const n = 8
	var wg sync.WaitGroup
	rows := make([]int, n)
	for i := range n {
		wg.Go(func() {
			status, _, body := get(t, "GET", base+"/sessions")
			if status == 200 {
				rows[i] = len(decodeReply(t, body).Sessions)
			}
		})
	}
	select {
	case <-r.called: // the first request is listing the relay
	case <-time.After(waitTimeout):
		t.Fatal("no request asked the relay")
	}
	close(r.gate)
	wg.Wait()
	if !slices.Equal(rows, slices.Repeat([]int{3}, n)) {
		t.Errorf("rows per answer %v, want 3 each", rows)
	}
	if c := r.calls.Load(); c != 1 {
		t.Errorf("%d concurrent requests listed the relay %d times, want once", n, c)
	}

	// Within the interval: still the same snapshot.
	clk.add(admin.DefaultSnapshotInterval - time.Millisecond)
	get(t, "GET", base+"/sessions")
	if c := r.calls.Load(); c != 1 {
		t.Errorf("a request within the interval listed the relay again (%d calls)", c)
	}
	// After it: a new one, and its time says so.
	clk.add(time.Millisecond)
	_, _, body := get(t, "GET", base+"/sessions")
	if c := r.calls.Load(); c != 2 {
		t.Errorf("a request after the interval: %d calls, want 2", c)
	}
	if got := decodeReply(t, body).SnapshotTime; !got.Equal(t0.Add(admin.DefaultSnapshotInterval)) {
		t.Errorf("snapshot_time %v, want the new snapshot's %v", got, t0.Add(admin.DefaultSnapshotInterval))
	}
}

// TestPaging follows "next" from the first page to the last: every session
// appears exactly once, in order, and no page is larger than the limit.
func TestPaging(t *testing.T) {
	a := &countingRelay{name: "a", sessions: sessionsOf(5, 1)}
	b := &countingRelay{name: "b"} // no sessions: a page boundary may fall on it
	c := &countingRelay{name: "c", sessions: sessionsOf(4, 2)}
	d := &countingRelay{name: "d/with/slashes", sessions: sessionsOf(2, 3)}
	_, base := start(t, []admin.Relay{d, c, b, a}, admin.Options{})

	// Everything in one page: the order to expect.
	_, _, body := get(t, "GET", base+"/sessions?limit=100")
	all := decodeReply(t, body)
	if len(all.Sessions) != 11 || all.Next != "" {
		t.Fatalf("one big page: %d sessions, next %q; want 11 and no next", len(all.Sessions), all.Next)
	}
	var want []string
	for _, s := range all.Sessions {
		want = append(want, s.Key())
	}
	if !slices.IsSorted(want) {
		t.Errorf("not sorted by relay, client ID, UUID: %v", want)
	}

	for _, tt := range []struct {
		name  string
		query string
		want  []string
	}{
		{name: "limit 1", query: "?limit=1", want: want},
		{name: "limit 2", query: "?limit=2", want: want},
		{name: "limit 5, a boundary at relay a's end", query: "?limit=5", want: want},
		{name: "limit 11, exactly all", query: "?limit=11", want: want},
		{name: "one relay", query: "?relay=c&limit=3", want: want[5:9]},
		{name: "a relay name with slashes", query: "?relay=d%2Fwith%2Fslashes&limit=1", want: want[9:]},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v, err := url.ParseQuery(strings.TrimPrefix(tt.query, "?"))
			if err != nil {
				t.Fatal(err)
			}
			limit, err := strconv.Atoi(v.Get("limit"))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			page := base + "/sessions" + tt.query
			for pages := 0; ; pages++ {
				if pages > 20 {
					t.Fatal("more than 20 pages: next does not advance")
				}
				status, _, body := get(t, "GET", page)
				if status != 200 {
					t.Fatalf("%s: %d %s", page, status, body)
				}
				r := decodeReply(t, body)
				for _, s := range r.Sessions {
					got = append(got, s.Key())
				}
				if r.Next == "" {
					break
				}
				u, err := url.Parse(page)
				if err != nil {
					t.Fatal(err)
				}
				ref, err := url.Parse(r.Next)
				if err != nil {
					t.Fatalf("next %q: %v", r.Next, err)
				}
				if n := len(r.Sessions); n == 0 || n > limit {
					t.Errorf("page %s has %d sessions and a next one; want 1..%d", page, n, limit)
				}
				page = u.ResolveReference(ref).String()
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("rows across pages:\n got %v\nwant %v", got, tt.want)
			}
		})
	}
}

func TestPagingBadQuery(t *testing.T) {
	a := &countingRelay{name: "a", sessions: sessionsOf(2, 1)}
	_, base := start(t, []admin.Relay{a}, admin.Options{})
	tests := []struct {
		name, query string
		status      int
		err         string
		rows        int
	}{
		{name: "limit not a number", query: "?limit=ten", status: 400, err: "limit"},
		{name: "limit zero", query: "?limit=0", status: 400, err: "limit"},
		{name: "after without slashes", query: "?after=a", status: 400, err: "RELAY/CLIENT_ID/UUID"},
		{name: "limit over the maximum is capped", query: "?limit=999999999", status: 200, rows: 2},
		{name: "after the last row", query: "?after=a%2Fffffff%2Fz", status: 200, rows: 0},
		{name: "after a relay that is gone", query: "?after=0%2F000000%2Fx", status: 200, rows: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := get(t, "GET", base+"/sessions"+tt.query)
			if status != tt.status {
				t.Fatalf("status %d, want %d: %s", status, tt.status, body)
			}
			if tt.err != "" {
				var e admin.ErrorReply
				if err := json.Unmarshal([]byte(body), &e); err != nil || !strings.Contains(e.Error, tt.err) {
					t.Errorf("error %q (%v), want one naming %q", body, err, tt.err)
				}
				return
			}
			if r := decodeReply(t, body); len(r.Sessions) != tt.rows || r.Next != "" {
				t.Errorf("%d rows, next %q; want %d and no next", len(r.Sessions), r.Next, tt.rows)
			}
		})
	}
}

// A v4 client on a dual-stack socket is shown as IPv4, not as
// [::ffff:127.0.0.1]:port.
func TestMappedAddressesShownAsIPv4(t *testing.T) {
	s := session(1, idA, "[::ffff:127.0.0.1]:7001", 40001, 1)
	s.UpstreamLocal = netip.MustParseAddrPort("[::ffff:192.0.2.1]:40001")
	s.Upstream = netip.MustParseAddrPort("[::ffff:162.159.192.1]:2408")
	six := session(2, idB, "[2001:db8::1]:7002", 40002, 1)
	a := &fakeRelay{name: "a", sessions: []admin.Session{s, six}}
	_, base := start(t, []admin.Relay{a}, admin.Options{})
	_, _, body := get(t, "GET", base+"/sessions")
	r := decodeReply(t, body)
	if len(r.Sessions) != 2 {
		t.Fatalf("%d sessions, want 2", len(r.Sessions))
	}
	got := r.Sessions[1] // a81a15 sorts after 010203
	if got.ClientAddr != "127.0.0.1:7001" || got.UpstreamLocal != "192.0.2.1:40001" || got.Upstream != "162.159.192.1:2408" {
		t.Errorf("addresses %s %s %s, want them as IPv4", got.ClientAddr, got.UpstreamLocal, got.Upstream)
	}
	if c := r.Sessions[0].ClientAddr; c != "[2001:db8::1]:7002" {
		t.Errorf("an IPv6 client shown as %s", c)
	}
	if strings.Contains(body, "::ffff:") {
		t.Errorf("the body still shows a mapped address:\n%s", body)
	}
}
