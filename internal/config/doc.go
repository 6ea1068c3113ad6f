// Package config owns udpfwd's settings: the relays to run and the
// process-wide ones, as typed values (netip addresses, durations, sizes).
//
// One model holds them whatever wrote them: the YAML config file (Decode,
// Read), the command line's relay (FromArgs) or static forward file
// (ReadForward), and the flags given over either (SetFlag). Every key has
// one parse function, which the file's decoder and the key's flag both
// call, so a key and its flag accept the same values with the same
// messages. Validate then checks the whole once and fills in defaults;
// each message names where its value was set, the file's line and key or
// the flag. The relay (actors/relay) takes a validated Relay as it is.
package config
