// Package policies registers every load-balancing policy vigil ships
// (round_robin, least_request, random, ring_hash, maglev, weighted_round_robin). Its only job is its side effect:
//
//	import _ "github.com/vigil-proxy/vigil/balancer/policies"
//
// after which balancer.PolicyByName finds each of them by its lb_policy name.
package policies

import (
	// Each registers itself with balancer.Register in init.
	_ "github.com/vigil-proxy/vigil/balancer/leastrequest"
	_ "github.com/vigil-proxy/vigil/balancer/maglev"
	_ "github.com/vigil-proxy/vigil/balancer/random"
	_ "github.com/vigil-proxy/vigil/balancer/ringhash"
	_ "github.com/vigil-proxy/vigil/balancer/roundrobin"
	_ "github.com/vigil-proxy/vigil/balancer/wrr"
)
