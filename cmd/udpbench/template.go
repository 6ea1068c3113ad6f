package main

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// templateVars are the values of a relay command template's placeholders.
type templateVars struct {
	Listen       string // {listen}: host:port the relay must listen on
	ListenPort   string // {listen_port}
	Upstream     string // {upstream}: the echo server, host:port
	UpstreamPort string // {upstream_port}
	Dir          string // {dir}: a fresh temporary directory for config files
	Self         string // {self}: this udpbench binary
}

// placeholderRE matches anything that looks like a placeholder, so a typo
// such as {listenport} is an error instead of a literal argument.
var placeholderRE = regexp.MustCompile(`\{[a-z_]+\}`)

// lookup returns the value of placeholder p ("{listen}").
func (v templateVars) lookup(p string) (string, bool) {
	switch p {
	case "{listen}":
		return v.Listen, true
	case "{listen_port}":
		return v.ListenPort, true
	case "{upstream}":
		return v.Upstream, true
	case "{upstream_port}":
		return v.UpstreamPort, true
	case "{dir}":
		return v.Dir, true
	case "{self}":
		return v.Self, true
	}
	return "", false
}

// expandTemplate splits a command template into words the way a POSIX
// shell would (quotes and backslashes, no variables, globs or pipes), then
// replaces the placeholders in every word. Splitting first means a value
// containing spaces stays one argument.
func expandTemplate(tmpl string, v templateVars) ([]string, error) {
	words, err := splitWords(tmpl)
	if err != nil {
		return nil, err
	}
	if len(words) == 0 {
		return nil, errors.New("empty command template")
	}
	var bad []string
	for i, w := range words {
		words[i] = placeholderRE.ReplaceAllStringFunc(w, func(p string) string {
			val, ok := v.lookup(p)
			if !ok {
				bad = append(bad, p)
				return p
			}
			return val
		})
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("unknown placeholder(s) %s (known: {listen} {listen_port} {upstream} {upstream_port} {dir} {self})", strings.Join(bad, " "))
	}
	return words, nil
}

// splitWords splits s into words: whitespace separates words; '...' keeps
// everything literal; "..." keeps spaces and honours \" and \\; a
// backslash outside quotes escapes the next character.
func splitWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == ' ' || ch == '\t' || ch == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case ch == '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return nil, errors.New("template: unterminated single quote")
			}
			cur.WriteString(s[i+1 : i+1+end])
			i += end + 1
			inWord = true
		case ch == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && (s[i+1] == '"' || s[i+1] == '\\') {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, errors.New("template: unterminated double quote")
			}
			inWord = true
		case ch == '\\':
			if i+1 >= len(s) {
				return nil, errors.New("template: trailing backslash")
			}
			i++
			cur.WriteByte(s[i])
			inWord = true
		default:
			cur.WriteByte(ch)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// shellQuote quotes s as one word for splitWords (and for a POSIX shell).
func shellQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\n'\"\\{}$`*?[]#~&;|<>()") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
