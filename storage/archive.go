package storage

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/gavel-auction/gavel/api"
)

// The archive holds the final results of retired auctions (see
// auction.Limits), keyed by auction id, in one of two buckets of
// meta.db: the active one, named by the meta key "archive", and the
// other, where the results of a snapshot being received are staged. Reset
// installs a snapshot and makes the staged bucket the active one in the
// same transaction, so the archive always matches the state on disk.
//
// Archive, Result and Results are used by the node's driver; bbolt
// serialises them with the background snapshot writes.

var (
	keyArchive     = []byte("archive")
	archiveBuckets = [2][]byte{[]byte("archive.a"), []byte("archive.b")}
)

// active returns the names of the active and the staging bucket.
func active(tx *bolt.Tx) (cur, staged []byte) {
	if string(tx.Bucket(bucketMeta).Get(keyArchive)) == string(archiveBuckets[1]) {
		return archiveBuckets[1], archiveBuckets[0]
	}
	return archiveBuckets[0], archiveBuckets[1]
}

// put stores infos in bucket name.
func put(tx *bolt.Tx, name []byte, infos []*api.AuctionInfo) error {
	b, err := tx.CreateBucketIfNotExists(name)
	if err != nil {
		return err
	}
	for _, info := range infos {
		data, err := proto.Marshal(info)
		if err != nil {
			return fmt.Errorf("encode result of %q: %w", info.GetAuction(), err)
		}
		if err := b.Put([]byte(info.GetAuction()), data); err != nil {
			return err
		}
	}
	return nil
}

// Archive adds the results of retired auctions to the archive.
func (s *Store) Archive(infos []*api.AuctionInfo) error { return s.add(infos, false) }

// Stage adds results of a snapshot being received to the staging bucket.
func (s *Store) Stage(infos []*api.AuctionInfo) error { return s.add(infos, true) }

// add stores infos in the archive, or in the staging bucket.
func (s *Store) add(infos []*api.AuctionInfo, staging bool) error {
	if len(infos) == 0 {
		return nil
	}
	if err := s.meta.Update(func(tx *bolt.Tx) error {
		cur, staged := active(tx)
		if staging {
			cur = staged
		}
		return put(tx, cur, infos)
	}); err != nil {
		return fmt.Errorf("%w: %s: archive: %v", ErrUnusable, s.path("meta.db"), err)
	}
	return nil
}

// ResetStaged empties the staging bucket: a new snapshot transfer begins.
func (s *Store) ResetStaged() error {
	if err := s.meta.Update(func(tx *bolt.Tx) error {
		_, staged := active(tx)
		if tx.Bucket(staged) == nil {
			return nil
		}
		return tx.DeleteBucket(staged)
	}); err != nil {
		return fmt.Errorf("%w: %s: archive: %v", ErrUnusable, s.path("meta.db"), err)
	}
	return nil
}

// installStaged makes the staging bucket the archive and drops the old
// one (Reset's transaction).
func (s *Store) installStaged(tx *bolt.Tx) error {
	cur, staged := active(tx)
	if _, err := tx.CreateBucketIfNotExists(staged); err != nil {
		return err
	}
	if tx.Bucket(cur) != nil {
		if err := tx.DeleteBucket(cur); err != nil {
			return err
		}
	}
	return tx.Bucket(bucketMeta).Put(keyArchive, staged)
}

// Result returns the archived result of auction id.
func (s *Store) Result(id string) (*api.AuctionInfo, bool, error) {
	var info *api.AuctionInfo
	err := s.meta.View(func(tx *bolt.Tx) error {
		cur, _ := active(tx)
		b := tx.Bucket(cur)
		if b == nil {
			return nil
		}
		v := b.Get([]byte(id))
		if v == nil {
			return nil
		}
		info = &api.AuctionInfo{}
		return proto.Unmarshal(v, info)
	})
	if err != nil {
		return nil, false, fmt.Errorf("%w: %s: archived result of %q: %v", ErrCorrupt, s.path("meta.db"), id, err)
	}
	return info, info != nil, nil
}

// Results returns up to max archived results with ids after `after` (all
// from ""), in id order.
func (s *Store) Results(after string, max int) ([]*api.AuctionInfo, error) {
	var out []*api.AuctionInfo
	err := s.meta.View(func(tx *bolt.Tx) error {
		cur, _ := active(tx)
		b := tx.Bucket(cur)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		k, v := c.Seek([]byte(after))
		if k != nil && string(k) == after {
			k, v = c.Next()
		}
		for ; k != nil && len(out) < max; k, v = c.Next() {
			info := &api.AuctionInfo{}
			if err := proto.Unmarshal(v, info); err != nil {
				return fmt.Errorf("result of %q: %v", k, err)
			}
			out = append(out, info)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %s: archive: %v", ErrCorrupt, s.path("meta.db"), err)
	}
	return out, nil
}

// Archived counts the results in the archive.
func (s *Store) Archived() (int, error) {
	n := 0
	err := s.meta.View(func(tx *bolt.Tx) error {
		cur, _ := active(tx)
		if b := tx.Bucket(cur); b != nil {
			n = b.Stats().KeyN
		}
		return nil
	})
	return n, err
}
