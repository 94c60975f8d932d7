// Package datasource is the cloud-init datasource (NoCloud layout over HTTP) that nodes reach
// through their WireGuard tunnels, and the phone-home endpoint that ends a boot.
//
// The node is identified only by the source address of the TCP connection, which the
// gateway's WireGuard cryptokey routing ties to the attested key of one open tunnel; no
// header is ever consulted. The listener is bound to the WireGuard interface
// (SO_BINDTODEVICE), so a packet from any other interface finds no socket.
//
// Answers: 200 for the four documents (an empty body when there is nothing), fast, because
// cloud-init 22.4 retries failures and has no socket timeout; 404 for any other path; 403 when
// no open tunnel owns the source address; 400 for a malformed or oversized phone-home; 503 when
// the inventory cannot be read or a document cannot be rendered, so that cloud-init retries
// instead of booting unconfigured. Every refusal is an event.
package datasource
