package session

import (
	"testing"
	"unsafe"
)

func TestZZSize(t *testing.T) {
	t.Log("Session", unsafe.Sizeof(Session{}), "Config", unsafe.Sizeof(Config{}), "peer", unsafe.Sizeof(Session{}.peer), "hs", unsafe.Sizeof(handshakeClock{}), "unconf", unsafe.Sizeof(unconfirmedBudgets{}))
}
