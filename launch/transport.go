package launch

import (
	"fmt"
	"net"
	"strings"
)

// checkTransport refuses to start ps when they would run without TLS
// where others can reach them. A configuration without tls.ca must say
// insecure: true (config.CheckTransport, as every process checks at its
// start), and even then its processes may only run on the launching
// machine or hosts reached without ssh, listening and reached on loopback
// addresses: plaintext lets anyone who reaches a port act as any node,
// master or gateway.
func (l *Launcher) checkTransport(ps []Proc) error {
	if err := l.cfg.CheckTransport(); err != nil {
		return err
	}
	if l.cfg.TLSEnabled() {
		return nil
	}
	var far []string
	for _, p := range ps {
		if h := l.hostOf(p); h.Remote() {
			far = append(far, fmt.Sprintf("%s %s runs on %s", p.Kind, p.ID, h.Where()))
			continue
		}
		addrs := []struct{ key, addr string }{{"addr", p.Addr}}
		for _, b := range p.Binds {
			addrs = append(addrs, struct{ key, addr string }{b.Key, b.Addr})
		}
		for _, a := range addrs {
			if !onLoopback(a.addr) {
				far = append(far, fmt.Sprintf("%s %s listens or is reached at %s", p.Kind, p.ID, a.addr))
				break
			}
		}
	}
	if len(far) == 0 {
		return nil
	}
	return fmt.Errorf("%s: %w: without TLS (tls.ca empty) every process must stay on loopback, but %s; "+
		"make certificates with gavel certs init --config %s and set tls.ca", l.file, ErrNeedsTLS, strings.Join(far, "; "), l.file)
}

// onLoopback reports whether addr (host:port) is a loopback address.
func onLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
