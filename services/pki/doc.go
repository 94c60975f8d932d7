// Package pki creates and loads the development PKI of an attestboot deployment: a CA, a server
// certificate and an admin client certificate kept in a state directory and created on first
// start, and the TLS configurations of servers, nodes and admins built from it or from files an
// operator provides.
package pki
