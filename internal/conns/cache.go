package conns

import (
	"errors"
	"slices"
	"sync"

	"google.golang.org/grpc"
)

// Cache holds one client connection per address, each made with the
// cache's dial options the first time Get asks for its address. It is safe
// for concurrent use.
type Cache struct {
	opts []grpc.DialOption

	mu     sync.RWMutex // guards conns and closed
	conns  map[string]*grpc.ClientConn
	closed bool
}

// New returns an empty cache whose connections dial with opts, in that
// order (grpc.NewClient applies them in turn: a later option overrides an
// earlier one of the same kind).
func New(opts ...grpc.DialOption) *Cache {
	return &Cache{opts: slices.Clone(opts), conns: map[string]*grpc.ClientConn{}}
}

// Get returns the connection to addr, creating it (without connecting:
// grpc.NewClient connects on the first call) when the cache has none.
// It fails when grpc.NewClient refuses addr or the options, and with
// ErrClosed after Close.
func (c *Cache) Get(addr string) (*grpc.ClientConn, error) {
	c.mu.RLock()
	cc, ok := c.conns[addr]
	closed := c.closed
	c.mu.RUnlock()
	switch {
	case ok:
		return cc, nil
	case closed:
		return nil, ErrClosed
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if cc, ok := c.conns[addr]; ok {
		return cc, nil
	}
	cc, err := grpc.NewClient(addr, c.opts...)
	if err != nil {
		return nil, err
	}
	c.conns[addr] = cc
	return cc, nil
}

// Close closes every connection of the cache: calls in flight on them
// fail, and Get returns ErrClosed from then on. It returns the errors of
// the connections' Close, joined; closing a closed cache does nothing.
func (c *Cache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var errs []error
	for _, cc := range c.conns {
		errs = append(errs, cc.Close())
	}
	c.conns = nil
	return errors.Join(errs...)
}
