// This file is `udpfwd id`: it shows a WARP client ID in every form the
// tools around WARP write it, and the config snippets that send it.

package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/udpfwd/udpfwd/internal/wgproto"
)

const idUsageText = `udpfwd id: show a WARP client ID in its three forms and as client config

Usage:
  udpfwd id ID...

ID is any of the forms WARP tools print: base64 as WARP's API gives client_id (qBoV),
hex as udpfwd logs it (a81a15) or the decimal triple sing-box and Xray call
"reserved" ([168, 26, 21] or 168,26,21; quote it, or it may be split by the
shell — split pieces are joined again).
`

// runID is `udpfwd id ARGS...`: exit 0, or 2 with one line for a bad ID or
// no ID at all.
func runID(args []string, stdout, stderr io.Writer) int {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
		fmt.Fprint(stdout, idUsageText)
		return exitOK
	}
	ids, err := idArgs(args)
	if err != nil {
		fmt.Fprintf(stderr, "udpfwd id: %v (see udpfwd id -h)\n", err)
		return exitUsage
	}
	var out strings.Builder
	for i, id := range ids {
		if i > 0 {
			out.WriteString("\n")
		}
		writeID(&out, id)
	}
	io.WriteString(stdout, out.String()) //nolint:errcheck // nothing to do about a closed stdout
	return exitOK
}

// idArgs parses the command line's IDs. A triple the shell split at its
// spaces ("[168," "26," "21]") arrives as several arguments: an argument
// that opens a bracket takes the following ones up to the one that closes
// it, and one that ends in a comma takes the next.
func idArgs(args []string) ([]wgproto.ClientID, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("no client ID given")
	}
	var ids []wgproto.ClientID
	for i := 0; i < len(args); i++ {
		s := args[i]
		for i+1 < len(args) && (strings.HasSuffix(s, ",") || (strings.Contains(s, "[") && !strings.Contains(s, "]"))) {
			i++
			s += " " + args[i]
		}
		id, err := wgproto.ParseClientID(s)
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// writeID writes one ID's forms and snippets.
func writeID(w io.Writer, id wgproto.ClientID) {
	fmt.Fprintf(w, "client ID %s\n", id.Base64())
	fmt.Fprintf(w, "  base64    %s\n", id.Base64())
	fmt.Fprintf(w, "  hex       %s\n", id)
	fmt.Fprintf(w, "  decimal   %s\n", id.Triple())
	fmt.Fprintf(w, "  sing-box  \"reserved\": %s   (in the WireGuard endpoint's peer)\n", id.Triple())
	fmt.Fprintf(w, "  Xray      \"reserved\": %s   (in the wireguard outbound's settings)\n", id.Triple())
}
