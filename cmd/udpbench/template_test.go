package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var testVars = templateVars{
	Listen: "127.0.0.1:4000", ListenPort: "4000", Upstream: "127.0.0.1:5000", UpstreamPort: "5000",
	Dir: "/tmp/a dir", Self: "/bin/udpbench",
}

func TestExpandTemplate(t *testing.T) {
	tests := []struct {
		name    string
		tmpl    string
		want    []string
		wantErr string
	}{
		{"udpfwd shape", "udpfwd -r 127.0.0.1:{listen_port} 127.0.0.1:{upstream_port}",
			[]string{"udpfwd", "-r", "127.0.0.1:4000", "127.0.0.1:5000"}, ""},
		{"all placeholders", "x {listen} {upstream} {dir} {self}",
			[]string{"x", "127.0.0.1:4000", "127.0.0.1:5000", "/tmp/a dir", "/bin/udpbench"}, ""},
		{"value with a space stays one word", "nginx -c {dir}/nginx.conf", []string{"nginx", "-c", "/tmp/a dir/nginx.conf"}, ""},
		{"two placeholders in one word", "x {listen}->{upstream}", []string{"x", "127.0.0.1:4000->127.0.0.1:5000"}, ""},
		{"single quotes", `sh -c 'echo {listen_port} "hi"'`, []string{"sh", "-c", `echo 4000 "hi"`}, ""},
		{"double quotes and escapes", `a "b c\"d" e\ f`, []string{"a", `b c"d`, "e f"}, ""},
		{"quoted empty word", `a '' b`, []string{"a", "", "b"}, ""},
		{"extra whitespace", "  a\t b \n", []string{"a", "b"}, ""},
		{"braces that are not placeholders", "a {} {X} {", []string{"a", "{}", "{X}", "{"}, ""},
		{"unknown placeholder", "a {listenport}", nil, "unknown placeholder"},
		{"empty", "   ", nil, "empty command"},
		{"unterminated single", "a 'b", nil, "unterminated single"},
		{"unterminated double", `a "b`, nil, "unterminated double"},
		{"trailing backslash", `a \`, nil, "trailing backslash"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := expandTemplate(tt.tmpl, testVars)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestShellQuoteRoundTrip(t *testing.T) {
	tests := []struct{ name, in string }{
		{"plain", "/usr/bin/udpfwd"},
		{"space", "/opt/my relay/udpfwd"},
		{"single quote", "/opt/it's/udpfwd"},
		{"empty", ""},
		{"shell metacharacters", "a;b|c$d"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := splitWords(shellQuote(tt.in) + " x")
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, []string{tt.in, "x"}) {
				t.Errorf("split(quote(%q)) = %q", tt.in, got)
			}
		})
	}
}

func TestPresets(t *testing.T) {
	o := presetOptions{UdpfwdBin: "/opt/udp fwd/udpfwd", NginxBin: "nginx", SocatBin: "socat", Self: "/bin/udpbench"}
	tests := []struct {
		name string
		want []string
	}{
		{"udpfwd", []string{"/opt/udp fwd/udpfwd", "-r", "127.0.0.1:4000", "127.0.0.1:5000"}},
		{"nginx", []string{"nginx", "-c", "/tmp/a dir/nginx.conf", "-e", "/tmp/a dir/error.log"}},
		{"socat", []string{"socat", "-T", "600", "UDP4-LISTEN:4000,bind=127.0.0.1,fork,reuseaddr", "UDP4:127.0.0.1:5000"}},
		{"naive", []string{"/bin/udpbench", "relay", "--listen", "127.0.0.1:4000", "--upstream", "127.0.0.1:5000"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, ok := preset(tt.name, o)
			if !ok {
				t.Fatal("no such preset")
			}
			got, err := expandTemplate(r.Template, testVars)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseRelayFlag(t *testing.T) {
	o := presetOptions{UdpfwdBin: "udpfwd", NginxBin: "nginx", SocatBin: "socat", Self: "udpbench"}
	tests := []struct {
		name     string
		in       string
		wantName string
		wantTmpl string
		wantErr  string
	}{
		{"preset", "socat", "socat", "", ""},
		{"custom", "two=socat -T 1 UDP4-LISTEN:{listen_port} UDP4:{upstream}", "two", "socat -T 1 UDP4-LISTEN:{listen_port} UDP4:{upstream}", ""},
		{"custom keeps later = signs", "x=cmd --a=b", "x", "cmd --a=b", ""},
		{"unknown preset", "haproxy", "", "", "no such preset"},
		{"empty template", "x=  ", "", "", "empty command template"},
		{"bad name", "a b=cmd", "", "", "name must match"},
		{"empty name", "=cmd", "", "", "name must match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := parseRelayFlag(tt.in, o)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Name != tt.wantName || (tt.wantTmpl != "" && r.Template != tt.wantTmpl) {
				t.Errorf("got %q %q", r.Name, r.Template)
			}
		})
	}
}

func TestNginxConf(t *testing.T) {
	modules := t.TempDir()
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(modules, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("50-mod-stream.conf", "load_module modules/ngx_stream_module.so;\n")
	write("50-mod-mail.conf", "load_module modules/ngx_mail_module.so;\n")
	write("README", "load_module modules/ngx_stream_module.so; (not a .conf file)\n")

	lines, err := nginxStreamModuleLines(filepath.Join(modules, "*.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(lines, []string{"load_module modules/ngx_stream_module.so;"}) {
		t.Fatalf("module lines %q: want only the stream module", lines)
	}
	v := testVars
	v.Dir = t.TempDir()
	if err := writeNginxConf(v, filepath.Join(modules, "*.conf")); err != nil {
		t.Fatal(err)
	}
	conf := mustRead(t, filepath.Join(v.Dir, "nginx.conf"))
	for _, want := range []string{
		"load_module modules/ngx_stream_module.so;",
		"daemon off;", "master_process off;", "worker_processes 1;",
		"listen 127.0.0.1:4000 udp",
		"proxy_pass 127.0.0.1:5000;",
		"proxy_timeout 600s;",
		"pid " + filepath.Join(v.Dir, "nginx.pid") + ";",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("nginx.conf lacks %q:\n%s", want, conf)
		}
	}
	if strings.Index(conf, "load_module") > strings.Index(conf, "stream {") {
		t.Error("load_module must come before the stream block")
	}
}
