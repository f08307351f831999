package master

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/gavel-auction/gavel/api"
)

// The heartbeat handler under arbitrary requests: it never panics, and a
// malformed heartbeat (CheckHeartbeat) is refused and recorded nowhere:
// no report, no lease, no wake-up of the policy.

// heartbeatSeeds are requests a node sends, and malformed ones.
func heartbeatSeeds() []*api.HeartbeatRequest {
	return []*api.HeartbeatRequest{
		{Id: "n1", Addr: "127.0.0.1:7101", Incarnation: 7, Epoch: 2, Role: api.Role_HEAD, Applied: 10, Committed: 9,
			CaughtUp: true, Linked: true, Durable: 10, DataBytes: 4096},
		{Id: "n4", Addr: "n4.example.com:7104", Incarnation: 1, Role: api.Role_JOINING},
		{Id: "n2", Addr: "[::1]:7102", Incarnation: 3, Role: api.Role_TAIL, Recovered: true},
		{},
		{Id: "n1"},
		{Addr: "127.0.0.1:7101"},
		{Id: "n1", Addr: "127.0.0.1"},
		{Id: "n1", Addr: "127.0.0.1:0"},
		{Id: "n1", Addr: "127.0.0.1:70000"},
		{Id: "n1", Addr: ":7101"},
		{Id: "n 1", Addr: "127.0.0.1:7101"},
		{Id: "n1/../m1", Addr: "127.0.0.1:7101"},
		{Id: string(make([]byte, 65)), Addr: "127.0.0.1:7101"},
		{Id: "n1", Addr: "127.0.0.1:7101", Role: api.Role(99)},
	}
}

// addHeartbeatSeeds adds the wire form of heartbeatSeeds to f's corpus.
func addHeartbeatSeeds(f *testing.F) {
	for _, req := range heartbeatSeeds() {
		b, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// snapshotReports describes what l recorded of id, and how many it holds.
func snapshotReports(l *Leader, id string) string {
	r, ok := l.Report(id)
	return fmt.Sprintf("%d reports; %s: %v %+v", len(l.reports), id, ok, r)
}

func checkLeaderHeartbeat(t *testing.T, req *api.HeartbeatRequest) {
	cfg := Config{Epoch: 2, Chain: []Member{{ID: "n1", Addr: "127.0.0.1:7101", Incarnation: 7}}}
	l := NewLeader(time.Unix(1_700_000_000, 0))
	before := snapshotReports(l, req.GetId())
	res := l.Heartbeat(cfg, req, time.Unix(1_700_000_001, 0), time.Second)
	if CheckHeartbeat(req) != nil {
		if res != (HeartbeatResult{}) || snapshotReports(l, req.GetId()) != before {
			t.Fatalf("malformed heartbeat %v: result %+v, recorded %s", req, res, snapshotReports(l, req.GetId()))
		}
		return
	}
	if _, ok := l.Report(req.GetId()); !ok {
		t.Fatalf("well-formed heartbeat %v not recorded", req)
	}
}

// FuzzLeaderHeartbeat: the leader's pure view (Leader.Heartbeat).
func FuzzLeaderHeartbeat(f *testing.F) {
	addHeartbeatSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		var req api.HeartbeatRequest
		if proto.Unmarshal(data, &req) != nil {
			return
		}
		checkLeaderHeartbeat(t, &req)
	})
}

// FuzzMasterHeartbeat: the gRPC handler (masterServer.Heartbeat) of a
// master that leads a one-voter Raft group.
func FuzzMasterHeartbeat(f *testing.F) {
	addHeartbeatSeeds(f)
	m := soloLeader(f)
	s := &masterServer{m: m}
	f.Fuzz(func(t *testing.T, data []byte) {
		var req api.HeartbeatRequest
		if proto.Unmarshal(data, &req) != nil {
			return
		}
		m.mu.Lock()
		before := snapshotReports(m.leader, req.GetId())
		m.mu.Unlock()
		select {
		case <-m.kick:
		default:
		}
		rep, err := s.Heartbeat(context.Background(), &req)
		m.mu.Lock()
		after := snapshotReports(m.leader, req.GetId())
		m.mu.Unlock()
		if CheckHeartbeat(&req) != nil {
			if status.Code(err) != codes.InvalidArgument || rep != nil {
				t.Fatalf("malformed heartbeat %v: %v %v, want InvalidArgument", &req, rep, err)
			}
			if after != before {
				t.Fatalf("malformed heartbeat %v recorded: %s", &req, after)
			}
			select {
			case <-m.kick:
				t.Fatalf("malformed heartbeat %v woke the leader loop", &req)
			default:
			}
			return
		}
		if err != nil || rep.GetLeaderId() != "m1" {
			t.Fatalf("heartbeat %v: %v %v", &req, rep, err)
		}
	})
}
