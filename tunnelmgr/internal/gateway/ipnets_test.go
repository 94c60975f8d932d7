package gateway_test

import "net"

func ipnets(cidrs ...string) []net.IPNet {
	out := make([]net.IPNet, len(cidrs))
	for i, c := range cidrs {
		_, n, err := net.ParseCIDR(c)
		if err != nil {
			panic(err)
		}
		out[i] = *n
	}
	return out
}
