package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// printTable prints the cases side by side.
func printTable(w io.Writer, cases []outcome) {
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	row := func(label string, cell func(outcome) string) {
		fmt.Fprint(tw, label)
		for _, c := range cases {
			fmt.Fprint(tw, "\t", cell(c))
		}
		fmt.Fprintln(tw)
	}
	row("", func(c outcome) string {
		if c.viaRelay {
			return "through " + orDefault(c.relay, "the relay")
		}
		return "straight to the edge"
	})
	row("client ID", func(c outcome) string { return idString(c.id) })
	row("download", func(c outcome) string {
		switch {
		case c.setupErr != nil:
			return "did not run (error below)"
		case c.complete:
			return "complete, every byte verified"
		case c.stall != nil:
			return fmt.Sprintf("STALLED at %.0f %% (no progress for %v)", c.stall.Percent(), c.stall.Idle.Round(time.Second))
		default:
			return "FAILED (error below)"
		}
	})
	row("throughput", func(c outcome) string {
		if !c.complete {
			return "-"
		}
		return fmt.Sprintf("%.0f Mbit/s (%.2f s)", c.result.Mbps(), c.result.Elapsed.Seconds())
	})
	row("port changes", func(c outcome) string {
		if c.setupErr != nil {
			return "-"
		}
		return fmt.Sprint(c.roams)
	})
	row("router saw", func(c outcome) string {
		if c.sources == nil {
			return "-"
		}
		return fmt.Sprintf("%d source port(s)", len(c.sources))
	})
	row("servers touched", func(c outcome) string {
		if c.sources == nil {
			return "-"
		}
		return fmt.Sprintf("%d of %d", c.servers, c.total)
	})
	tw.Flush()
	for _, c := range cases {
		name := "direct"
		if c.viaRelay {
			name = "relay"
		}
		if c.setupErr != nil {
			fmt.Fprintf(w, "\n%s: error: %v\n", name, c.setupErr)
		} else if c.failure != nil {
			fmt.Fprintf(w, "\n%s: download failed: %v\n", name, c.failure)
		}
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
