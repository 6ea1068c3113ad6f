package config_test

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/udpfwd/udpfwd/internal/config"
)

// samples are non-zero values of the types config structs hold that the
// reflection below cannot make itself (their fields are unexported).
var samples = map[reflect.Type]any{
	reflect.TypeFor[netip.AddrPort](): netip.MustParseAddrPort("192.0.2.1:1"),
	reflect.TypeFor[netip.Addr]():     netip.MustParseAddr("192.0.2.1"),
	reflect.TypeFor[netip.Prefix]():   netip.MustParsePrefix("192.0.2.0/24"),
}

// setNonZero sets v, of any kind a config field has, to a value other than
// its zero value. A struct of this package gets its first field set.
func setNonZero(t *testing.T, v reflect.Value) {
	t.Helper()
	if s, ok := samples[v.Type()]; ok {
		v.Set(reflect.ValueOf(s))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(1)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(1)
	case reflect.Array:
		setNonZero(t, v.Index(0))
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 1, 1)
		setNonZero(t, s.Index(0))
		v.Set(s)
	case reflect.Struct:
		setNonZero(t, v.Field(0))
	default:
		t.Fatalf("no non-zero value for a %v: add one to samples", v.Type())
	}
}

// leaves calls f with the path of every field of v, descending into the
// structs of this package (Security, ClientRate, PortRange, HostPort): a
// field added anywhere in a Relay is one more leaf.
func leaves(v reflect.Value, path string, f func(path string, field reflect.Value)) {
	for i := range v.NumField() {
		field, name := v.Field(i), path+"."+v.Type().Field(i).Name
		if field.Kind() == reflect.Struct && field.Type().PkgPath() == reflect.TypeFor[config.Relay]().PkgPath() {
			leaves(field, name, f)
			continue
		}
		f(name, field)
	}
}

// TestRelayEqualCoversEveryField sets each field of a Relay in turn, at
// every depth: Equal must tell the changed relay from the zero one. A field
// added to Relay (or Security, ...) but not to Equal fails here, and so
// would be a reload that keeps a relay whose setting changed.
func TestRelayEqualCoversEveryField(t *testing.T) {
	n := 0
	leaves(reflect.ValueOf(config.Relay{}), "Relay", func(path string, _ reflect.Value) {
		n++
		var changed config.Relay
		var field reflect.Value
		leaves(reflect.ValueOf(&changed).Elem(), "Relay", func(p string, f reflect.Value) {
			if p == path {
				field = f
			}
		})
		setNonZero(t, field)
		zero := config.Relay{}
		if changed.Equal(&zero) || zero.Equal(&changed) {
			t.Errorf("Equal does not compare %s", path)
		}
		same := changed
		if !changed.Equal(&same) {
			t.Errorf("a relay with %s set is not Equal to its copy", path)
		}
	})
	if n < 20 {
		t.Fatalf("only %d fields found: the walk is broken", n)
	}
}
