package gateway

import (
	"net"
	"testing"
)

// countingConn counts the writes that reach the network.
type countingConn struct {
	net.Conn
	writes [][]byte
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes = append(c.writes, append([]byte(nil), p...))
	return len(p), nil
}

// Corked, writes gather and uncork sends them in one write; uncorked,
// each write goes through.
func TestCorkConnGathersWrites(t *testing.T) {
	under := &countingConn{}
	c := &corkConn{Conn: under}
	c.Write([]byte("a"))
	c.cork()
	c.Write([]byte("bc"))
	c.Write([]byte("d"))
	if len(under.writes) != 1 {
		t.Fatalf("%d writes while corked reached the network", len(under.writes)-1)
	}
	if err := c.uncork(); err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("e"))
	if err := c.uncork(); err != nil { // not corked: nothing to do
		t.Fatal(err)
	}
	got := ""
	for _, w := range under.writes {
		got += "[" + string(w) + "]"
	}
	if got != "[a][bcd][e]" {
		t.Errorf("writes = %s, want [a][bcd][e]", got)
	}
}
