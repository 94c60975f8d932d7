package agent

import (
	"errors"
	"fmt"
)

// Class says which part of the boot failed; each has its own exit code so an init system or a
// script can tell them apart.
type Class int

// Failure classes and their exit codes.
const (
	ClassOther       Class = 1
	ClassConfig      Class = 2
	ClassTPM         Class = 10
	ClassAttestation Class = 11
	ClassTunnel      Class = 12
	ClassWireGuard   Class = 13
	ClassMetadata    Class = 14
	ClassCloudInit   Class = 15
	ClassPhoneHome   Class = 16
)

var classNames = map[Class]string{
	ClassOther: "other", ClassConfig: "config", ClassTPM: "tpm", ClassAttestation: "attestation",
	ClassTunnel: "tunnel", ClassWireGuard: "wireguard", ClassMetadata: "metadata",
	ClassCloudInit: "cloud-init", ClassPhoneHome: "phone-home",
}

func (c Class) String() string { return classNames[c] }

// ExitCode of the class.
func (c Class) ExitCode() int { return int(c) }

// Error is a failed boot.
type Error struct {
	Class Class
	Err   error
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %v", e.Class, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

func fail(c Class, err error) error { return &Error{Class: c, Err: err} }

// ClassOf returns the class of err (ClassOther when it carries none).
func ClassOf(err error) Class {
	var e *Error
	if errors.As(err, &e) {
		return e.Class
	}
	return ClassOther
}
