package main

import (
	"runtime/debug"
	"testing"
)

func TestVersionFrom(t *testing.T) {
	vcs := func(rev, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	const rev = "480282a6f1d3c0ffee4242424242424242424242"
	tests := []struct {
		name string
		ld   string
		bi   *debug.BuildInfo
		want string
	}{
		{name: "set at build time", ld: "v1.2.3", bi: &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs(rev, "true")}, want: "v1.2.3"},
		{name: "no build info", want: "(devel)"},
		{name: "module version only", bi: &debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"}}, want: "v1.4.0"},
		{name: "devel with revision", bi: &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs(rev, "false")}, want: "(devel) 480282a6f1d3"},
		{name: "devel with changes", bi: &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs(rev, "true")}, want: "(devel) 480282a6f1d3+dirty"},
		{name: "empty version with revision", bi: &debug.BuildInfo{Settings: vcs(rev, "false")}, want: "(devel) 480282a6f1d3"},
		{name: "pseudo-version names the revision", bi: &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261203200600-480282a6f1d3+dirty"}, Settings: vcs(rev, "true")},
			want: "v0.0.0-20261203200600-480282a6f1d3+dirty"},
		{name: "tag and revision", bi: &debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"}, Settings: vcs(rev, "false")}, want: "v1.4.0 480282a6f1d3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := versionFrom(tt.ld, tt.bi); got != tt.want {
				t.Errorf("versionFrom = %q, want %q", got, tt.want)
			}
		})
	}
}
