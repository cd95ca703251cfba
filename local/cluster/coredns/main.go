// A CoreDNS with only the plugins a one-node test cluster's DNS needs, built from the
// Go module proxy by local/cluster/build.sh (the full CoreDNS also compiles every cloud
// provider's SDK; cluster DNS needs none of them).
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

// The plugins above, in CoreDNS's own order (core/dnsserver/zdirectives.go): a
// server block's plugins run in this order whatever order the Corefile lists them in.
func init() {
	dnsserver.Directives = []string{"errors", "log", "health", "ready", "loadbalance", "cache", "kubernetes", "forward"}
}

func main() { coremain.Run() }
