// Package clusterpb holds the protobuf messages udpfwd's relay nodes exchange
// over protoactor remote. The generated code is committed, so building needs
// no protoc; regenerate after editing udpfwd_cluster.proto with go generate (needs
// protoc and protoc-gen-go matching go.mod's google.golang.org/protobuf).
package clusterpb

//go:generate protoc --go_out=. --go_opt=paths=source_relative udpfwd_cluster.proto
