package cluster

import "github.com/udpfwd/udpfwd/internal/wgproto"

// Key names a session in the cluster: the relay it belongs to and its
// client's ID. A process may run several relays, and one client ID may
// have a session on each; nodes of one cluster must therefore give the
// relays that serve the same address the same names (with -r every node's
// relay is "default").
type Key struct {
	Relay  string
	Client wgproto.ClientID
}

// String is the key's cluster identity: "relay/client" with the client ID
// in hex, as directories and the PID cache hold it.
func (k Key) String() string { return k.Relay + "/" + k.Client.String() }
