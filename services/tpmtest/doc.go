// Package tpmtest runs software TPMs (swtpm) for tests and the many-node simulator: each one
// manufactured like a real TPM, with RSA and ECC endorsement keys certified by a private local
// CA, cached on disk by index so that it is made once, and started as a child process on a
// unix socket or TCP port that tpmconn opens.
//
// Tests call Start or StartN; programs use a Pool. Nothing outside the cache directory and the
// run directory is touched (no /var/lib/swtpm-localca).
package tpmtest
