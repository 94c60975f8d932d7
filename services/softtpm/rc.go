package softtpm

import "fmt"

// rc is a TPM_RC response code (TPM 2.0 Part 2, 6.6). Format-one codes (bit 7 set) carry the
// number of the handle, session or parameter at fault, added with the methods below.
type rc uint32

const (
	rcSuccess rc = 0x000
	rcBadTag  rc = 0x01E

	// Format zero (TPM_RC_VER1 + n).
	rcInitialize      rc = 0x100
	rcFailure         rc = 0x101
	rcAuthMissing     rc = 0x125
	rcAuthUnavailable rc = 0x12F
	rcCommandSize     rc = 0x142
	rcCommandCode     rc = 0x143
	rcAuthsize        rc = 0x144
	rcNVRange         rc = 0x146
	rcNVAuthorization rc = 0x149
	rcNVUninitialized rc = 0x14A
	rcNVLocked        rc = 0x148

	// Format one (TPM_RC_FMT1 + n).
	rcAttributes   rc = 0x082
	rcHash         rc = 0x083
	rcValue        rc = 0x084
	rcHierarchy    rc = 0x085
	rcKeySize      rc = 0x087
	rcMode         rc = 0x089
	rcType         rc = 0x08A
	rcHandle       rc = 0x08B
	rcKDF          rc = 0x08C
	rcAuthFail     rc = 0x08E
	rcNonce        rc = 0x08F
	rcScheme       rc = 0x092
	rcSize         rc = 0x095
	rcSymmetric    rc = 0x096
	rcTag          rc = 0x097
	rcInsufficient rc = 0x09A
	rcKey          rc = 0x09C
	rcPolicyFail   rc = 0x09D
	rcIntegrity    rc = 0x09F
	rcTicket       rc = 0x0A0
	rcReservedBits rc = 0x0A1
	rcBadAuth      rc = 0x0A2
	rcBinding      rc = 0x0A5
	rcCurve        rc = 0x0A6

	// Warnings (TPM_RC_WARN + n).
	rcObjectMemory  rc = 0x902
	rcSessionMemory rc = 0x903
	rcReferenceH0   rc = 0x910
	rcReferenceS0   rc = 0x918

	rcFmt1 rc = 0x080
	rcP    rc = 0x040 // the number is a parameter's
	rcS    rc = 0x800 // the number is a session's
)

func (c rc) fmt1() bool { return c&rcFmt1 != 0 }

// param says the n-th parameter (1-15) is at fault. Format-zero codes stay unchanged.
func (c rc) param(n int) rc {
	if !c.fmt1() {
		return c
	}
	return c | rcP | rc(n&0xF)<<8
}

// handle says the n-th handle (1-7) is at fault.
func (c rc) handle(n int) rc {
	if !c.fmt1() {
		return c
	}
	return c | rc(n&0x7)<<8
}

// session says the n-th session (1-7) is at fault.
func (c rc) session(n int) rc {
	if !c.fmt1() {
		return c
	}
	return c | rcS | rc(n&0x7)<<8
}

func (c rc) String() string { return fmt.Sprintf("TPM_RC %#x", uint32(c)) }
