// Package softtpm is an in-process software TPM 2.0 for the many-node simulator: thousands
// of simulated nodes attest with real cryptography through go-attestation, unchanged, to an
// unchanged attestor, without a swtpm process per node.
//
// It implements exactly the TPM 2.0 commands go-attestation sends to attest with a
// provisioned TPM (EK certificate in NV, EK and SRK persistent), byte-exact per TPM 2.0
// Parts 2 and 3 including the authorization areas:
//
//	GetCapability          TPM properties, handles, commands, PCR banks
//	NV_ReadPublic, NV_Read the EK certificate at NV index 0x01C00002
//	ReadPublic             EK at 0x81010001, SRK at 0x81000001, loaded keys
//	Create, Load           RSA-2048 or ECC P-256/P-384 signing keys under the SRK, with
//	                       creation data, creation ticket and a TPM2B_PRIVATE protected as
//	                       Part 1, 23 says
//	CertifyCreation        TPMS_ATTEST of type CREATION, signed by the key
//	StartAuthSession       unbound, unsalted policy (and trial) sessions
//	PolicySecret           PolicySecret(TPM_RH_ENDORSEMENT), the EK's policy
//	PolicyGetDigest
//	ActivateCredential     RSA-OAEP ("IDENTITY") seed, KDFa STORAGE/INTEGRITY keys,
//	                       AES-128-CFB, with the EK's policy and the AK's authorization
//	                       checked as a TPM does
//	Quote                  TPMS_ATTEST of type QUOTE over the SHA-256 PCR bank
//	PCR_Read               up to eight PCRs per call, as a TPM answers
//	FlushContext, Startup
//
// Anything else is answered TPM_RC_COMMAND_CODE; malformed commands get the TPM error a TPM
// would return (TPM_RC_COMMAND_SIZE, TPM_RC_INSUFFICIENT, TPM_RC_SIZE, ...), never a panic.
// HMAC, salted, bound and audit sessions, parameter encryption, decryption keys, PCR
// extension and NV writes are not implemented and are refused with TPM errors.
//
// Each TPM has an RSA-2048 EK with the TCG default template (what go-attestation reads at
// 0x81010001) and a certificate shaped like swtpm_localca's, issued by a CA the Pool makes
// once per cache directory; its PCRs hold the values of a freshly started swtpm (PCRs 17-22
// all ones, the others zero); it has no event log. The SRK is an ECC NIST P-256 key (the TCG
// ECC SRK template) derived from a per-TPM seed: go-attestation only checks that 0x81000001
// exists, and an RSA SRK would double the cost of making a TPM for nothing the flow uses.
//
// A Pool caches the EK key, certificate and seed of each TPM index in a file under its cache
// directory, so a ten-thousand-node simulation makes its TPMs once (Prepare, in parallel)
// and later loads them in a fraction of a millisecond each.
package softtpm
