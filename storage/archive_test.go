package storage

import (
	"fmt"
	"testing"

	"github.com/gavel-auction/gavel/api"
)

func results(ids ...string) []*api.AuctionInfo {
	out := make([]*api.AuctionInfo, len(ids))
	for i, id := range ids {
		out[i] = &api.AuctionInfo{Auction: id, State: api.AuctionState_CLOSED_STATE, Highest: int64(i + 1),
			Bidder: "b" + id, Retired: true}
	}
	return out
}

func archivedIDs(t *testing.T, s *Store) []string {
	t.Helper()
	var ids []string
	after := ""
	for {
		batch, err := s.Results(after, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, info := range batch {
			ids = append(ids, info.Auction)
			after = info.Auction
		}
		if len(batch) < 2 {
			return ids
		}
	}
}

// The archive keeps retired auctions' results across restarts, reads them
// back by id and in id order, and is replaced by the staged results, in
// the same transaction as the state, when a snapshot is installed.
func TestArchive(t *testing.T) {
	dir := t.TempDir()
	s, _ := mustOpen(t, opts(dir, true))
	if err := s.Archive(results("c", "a", "b")); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(archivedIDs(t, s)); got != "[a b c]" {
		t.Fatalf("archived %s", got)
	}
	if info, ok, err := s.Result("b"); err != nil || !ok || info.Bidder != "bb" || !info.Retired {
		t.Fatalf("Result(b) = %v %v %v", info, ok, err)
	}
	if _, ok, err := s.Result("zz"); ok || err != nil {
		t.Fatalf("Result(zz) = %v %v", ok, err)
	}
	// A transfer that is staged but never installed changes nothing.
	if err := s.Stage(results("x")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, _ = mustOpen(t, opts(dir, true))
	defer s.Close()
	if got := fmt.Sprint(archivedIDs(t, s)); got != "[a b c]" {
		t.Fatalf("after restart, archived %s", got)
	}
	// A new transfer drops what was staged before; its install replaces
	// the archive.
	for _, err := range []error{s.ResetStaged(), s.Stage(results("d")), s.Stage(results("e")),
		s.Reset(&api.StateSnapshot{Seq: 10})} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := fmt.Sprint(archivedIDs(t, s)); got != "[d e]" {
		t.Fatalf("after install, archived %s", got)
	}
	if n, err := s.Archived(); n != 2 || err != nil {
		t.Fatalf("Archived() = %d %v", n, err)
	}
	// The next transfer stages from empty, in the other bucket.
	for _, err := range []error{s.ResetStaged(), s.Stage(results("f")), s.Reset(&api.StateSnapshot{Seq: 20})} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := fmt.Sprint(archivedIDs(t, s)); got != "[f]" {
		t.Fatalf("after a second install, archived %s", got)
	}
}
