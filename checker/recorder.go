package checker

import (
	"fmt"
	"sync"

	"github.com/anishathalye/porcupine"
)

// OpID identifies one recorded operation.
type OpID int

// Recorder records client operations for Check. It is safe for concurrent
// use by any number of goroutines: every client calls Call just before it
// sends a request and Return just after it has the answer (or has given up).
//
// Time is a logical clock: a counter advanced under the recorder's mutex at
// every Call and Return. That is a monotonic clock with exactly the
// precision linearizability needs: if operation A returned before B was
// called, A's Return took the mutex before B's Call did, so A.Return <
// B.Call; operations that overlapped in real time may overlap in the
// record. Recording the call a little after the real send and the return
// a little after the real receipt only widens intervals, which is safe. A
// logical clock also makes a simulated run's history deterministic.
type Recorder struct {
	mu      sync.Mutex            // guards every field below
	clock   int64                 // last timestamp handed out
	ops     []porcupine.Operation // by OpID; Return is pending until set
	done    []bool                // by OpID: Return was called
	clients int                   // client ids handed out
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder { return &Recorder{} }

// Client is one sequential client of a Recorder: porcupine shows each
// client's operations on its own row.
type Client struct {
	rec *Recorder
	id  int
}

// NewClient returns a client with the next (zero-based) client id.
func (r *Recorder) NewClient() *Client {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := &Client{rec: r, id: r.clients}
	r.clients++
	return c
}

// ID is the client's porcupine ClientId.
func (c *Client) ID() int { return c.id }

// Call records the invocation of an operation and returns its id.
func (c *Client) Call(in Input) OpID { return c.rec.Call(c.id, in) }

// Return records how the operation ended; see Recorder.Return.
func (c *Client) Return(id OpID, out Output) { c.rec.Return(id, out) }

// Call records the invocation of an operation by client and returns its id.
func (r *Recorder) Call(client int, in Input) OpID {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.clock++
	r.ops = append(r.ops, porcupine.Operation{ClientId: client, Input: in, Call: r.clock,
		Output: UnknownOutput(), Return: pending})
	r.done = append(r.done, false)
	if client >= r.clients {
		r.clients = client + 1
	}
	return OpID(len(r.ops) - 1)
}

// Return records the end of an operation. An output with OutcomeUnknown
// means the client gave up: the operation stays pending forever (return
// time math.MaxInt64), so the checker may place it anywhere after its call.
// Returning an operation twice is a bug in the caller and panics.
func (r *Recorder) Return(id OpID, out Output) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if int(id) < 0 || int(id) >= len(r.ops) {
		panic(fmt.Sprintf("checker: Return of unknown operation %d", id))
	}
	if r.done[id] {
		panic(fmt.Sprintf("checker: operation %d returned twice", id))
	}
	r.done[id] = true
	r.clock++
	r.ops[id].Output = out
	if out.Outcome != OutcomeUnknown {
		r.ops[id].Return = r.clock
	}
}

// Operations returns a copy of the history so far. Operations that have
// not returned, or whose client gave up, have an unknown output and return
// time math.MaxInt64.
func (r *Recorder) Operations() []porcupine.Operation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]porcupine.Operation(nil), r.ops...)
}

// Len is the number of operations recorded.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ops)
}
