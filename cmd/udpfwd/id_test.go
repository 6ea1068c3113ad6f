package main

import (
	"bytes"
	"strings"
	"testing"
)

const qBoVOut = `client ID qBoV
  base64    qBoV
  hex       a81a15
  decimal   [168, 26, 21]
  sing-box  "reserved": [168, 26, 21]   (in the WireGuard endpoint's peer)
  Xray      "reserved": [168, 26, 21]   (in the wireguard outbound's settings)
`

func TestID(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string // a substring of the one line on stderr
	}{
		{name: "base64", args: []string{"qBoV"}, stdout: qBoVOut},
		{name: "hex", args: []string{"a81a15"}, stdout: qBoVOut},
		{name: "hex with 0x", args: []string{"0xA81A15"}, stdout: qBoVOut},
		{name: "triple with brackets as one argument", args: []string{"[168, 26, 21]"}, stdout: qBoVOut},
		{name: "triple without brackets", args: []string{"168,26,21"}, stdout: qBoVOut},
		{name: "triple split by the shell", args: []string{"[168,", "26,", "21]"}, stdout: qBoVOut},
		{name: "triple split without brackets", args: []string{"168,", "26,", "21"}, stdout: qBoVOut},
		{name: "two IDs", args: []string{"qBoV", "010203"}, stdout: qBoVOut + "\n" + strings.ReplaceAll(strings.ReplaceAll(strings.ReplaceAll(
			qBoVOut, "qBoV", "AQID"), "a81a15", "010203"), "[168, 26, 21]", "[1, 2, 3]")},
		{name: "bad", args: []string{"qBoV", "nope!"}, code: 2, stderr: `client ID "nope!"`},
		{name: "byte out of range", args: []string{"[256, 1, 1]"}, code: 2, stderr: "not 0..255"},
		{name: "zero", args: []string{"AAAA"}, code: 2, stderr: "is zero"},
		{name: "unclosed bracket", args: []string{"[1,", "2"}, code: 2, stderr: "client ID"},
		{name: "none", args: nil, code: 2, stderr: "no client ID given"},
		{name: "help", args: []string{"-h"}, stdout: idUsageText},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(append([]string{"id"}, tt.args...), &out, &errOut)
			if code != tt.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, tt.code, errOut.String())
			}
			if tt.code == 0 {
				if out.String() != tt.stdout || errOut.Len() != 0 {
					t.Errorf("stdout:\n%s\nwant:\n%s\nstderr %q", out.String(), tt.stdout, errOut.String())
				}
				return
			}
			if e := errOut.String(); !strings.Contains(e, tt.stderr) || strings.Count(e, "\n") != 1 || out.Len() != 0 {
				t.Errorf("stderr %q, stdout %q; want one line containing %q and nothing on stdout", e, out.String(), tt.stderr)
			}
		})
	}
}
