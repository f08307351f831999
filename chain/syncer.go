package chain

import (
	"sync"
	"time"

	"github.com/gavel-auction/gavel/api"
)

// syncer writes a node's applied updates to its data dir on a goroutine
// of its own, so that the driver sends a Ready's forwards at once and the
// node's fsync overlaps with its successors' (the replica holds back acks
// and replies until Persisted says the updates are on disk: see
// Options.AsyncDurable). It takes the jobs in the order the driver gave
// them; the updates of every job queued meanwhile go to the log in one
// batch, with one fsync. After each round it reports the last seq written
// to the driver, as an input, and wakes whoever waits in flush.
type syncer struct {
	n *Node

	// mu guards everything below; cond signals the end of each round.
	mu   sync.Mutex
	cond *sync.Cond
	jobs []syncJob
	// submitted and done count jobs, so that flush can wait for all of
	// those given so far.
	submitted, done uint64
	// last is what the last round wrote: the state generation and seq.
	lastGen, lastSeq uint64
	err              error // the data dir failed; nothing more is written
	stopped          bool
	wake             chan struct{} // capacity 1
}

// syncJob is one Ready's durable work: updates to append (and the results
// of the auctions they retire, archived after the log), or other work on
// the data dir (a snapshot in transfer set aside, or installed) that runs
// alone, in its turn. seq is the last update it makes durable (0: none).
type syncJob struct {
	gen, seq uint64
	ups      []*api.Update
	retired  []*api.AuctionInfo
	other    func() error
}

func newSyncer(n *Node) *syncer {
	s := &syncer{n: n, wake: make(chan struct{}, 1)}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// submit queues a job; it never blocks. Driver only.
func (s *syncer) submit(j syncJob) {
	s.mu.Lock()
	s.jobs = append(s.jobs, j)
	s.submitted++
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// flush waits until every job submitted so far is written, and returns
// what the last round wrote. Driver only (the syncer never waits for the
// driver, so this cannot deadlock).
func (s *syncer) flush() (gen, seq uint64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.done < s.submitted && s.err == nil && !s.stopped {
		s.cond.Wait()
	}
	return s.lastGen, s.lastSeq, s.err
}

// run is the syncer's goroutine: rounds until stop, then a last one for
// what is still queued.
func (s *syncer) run(stop <-chan struct{}) {
	for {
		select {
		case <-s.wake:
			s.round()
		case <-stop:
			s.round()
			s.mu.Lock()
			s.stopped = true
			s.cond.Broadcast()
			s.mu.Unlock()
			return
		}
	}
}

// round writes every queued job and reports the result to the driver.
func (s *syncer) round() {
	s.mu.Lock()
	jobs := s.jobs
	s.jobs = nil
	failed := s.err != nil
	s.mu.Unlock()
	if len(jobs) == 0 || failed {
		return
	}
	st := s.n.store
	var (
		err      error
		gen, seq uint64
		batch    []*api.Update
		retired  []*api.AuctionInfo
	)
	appendBatch := func() {
		if len(batch) == 0 || err != nil {
			batch, retired = nil, nil
			return
		}
		start := time.Now()
		err = st.Append(batch)
		s.n.metrics.fsync.Observe(time.Since(start).Seconds())
		if err == nil && len(retired) > 0 {
			// After the log: a crash in between is repaired by recovery.
			err = st.Archive(retired)
		}
		batch, retired = nil, nil
	}
	for _, j := range jobs {
		if j.gen != gen {
			appendBatch() // a batch holds one state's updates
		}
		gen = j.gen
		if j.other != nil {
			appendBatch()
			if err == nil {
				err = j.other()
			}
		} else {
			batch = append(batch, j.ups...)
			retired = append(retired, j.retired...)
		}
		if j.seq > 0 {
			seq = j.seq
		}
	}
	appendBatch()
	s.mu.Lock()
	s.done += uint64(len(jobs))
	if err != nil {
		s.err = err
	} else {
		s.lastGen, s.lastSeq = gen, seq
	}
	s.cond.Broadcast()
	s.mu.Unlock()
	s.n.enqueueNoWait(input{f: func(r *Replica) { s.n.persisted(r, gen, seq, err) }})
}
