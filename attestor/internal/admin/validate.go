package admin

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	inventoryv1 "github.com/attestboot/attestboot/proto/attestboot/inventory/v1"
	"github.com/attestboot/attestboot/services/ekcert"
	"github.com/attestboot/attestboot/services/inventory"
)

// Limits from the proto's field comments. The schema holds the formats too; checking them here
// gives the admin a message about the field instead of a constraint name.
const (
	maxDescription   = 1024 // characters
	maxReason        = 256  // characters
	maxHostname      = 253  // bytes (ASCII only)
	maxMembers       = 1000 // node ids per membership call
	maxEKCertificate = 8 << 10
	maxEKPublicKey   = 2 << 10
	maxPCRIndex      = 23
	// Event filters may name ids that are not valid node ids (refusals record what a caller
	// claimed), so they are bounded rather than checked against the id syntax.
	maxFilterValue = 256
	maxFilterKinds = 64
)

var (
	nameRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)
)

// checkName checks a node id or group name.
func checkName(field, v string) error {
	if v == "" {
		return invalidf("%s is required", field)
	}
	if !nameRE.MatchString(v) {
		return invalidf("%s %q: must be 1 to 63 characters of [A-Za-z0-9._-], starting with a letter or digit", field, v)
	}
	return nil
}

// parseMAC parses an Ethernet (EUI-48) address; "" means none.
func parseMAC(field, v string) (net.HardwareAddr, error) {
	if v == "" {
		return nil, nil
	}
	mac, err := net.ParseMAC(v)
	if err != nil || len(mac) != 6 {
		return nil, invalidf("%s %q: not an Ethernet MAC address such as aa:bb:cc:dd:ee:ff", field, v)
	}
	return mac, nil
}

// checkHostname checks an RFC 1123 host name; "" means none.
func checkHostname(field, v string) error {
	if v == "" {
		return nil
	}
	if len(v) > maxHostname || !hostnameRE.MatchString(v) {
		return invalidf("%s %q: not an RFC 1123 host name (dot-separated labels of letters, digits and inner hyphens, at most 63 characters each and %d in all)", field, v, maxHostname)
	}
	return nil
}

// checkText checks free text: at most max characters and no NUL, which Postgres text refuses.
func checkText(field, v string, max int) error {
	if n := utf8.RuneCountInString(v); n > max {
		return invalidf("%s: %d characters, at most %d allowed", field, n, max)
	}
	if strings.ContainsRune(v, 0) {
		return invalidf("%s: must not contain NUL characters", field)
	}
	return nil
}

// pageSize turns a request's page_size into a limit: 0 means 100, the range is 1 to 1000.
func pageSize(n int32) (int, error) {
	switch {
	case n == 0:
		return inventory.DefaultPageSize, nil
	case n < 0 || n > inventory.MaxPageSize:
		return 0, invalidf("page_size %d: must be 1 to %d (0 means %d)", n, inventory.MaxPageSize, inventory.DefaultPageSize)
	}
	return int(n), nil
}

// maskPaths checks an update mask: required, naming only allowed fields. It returns the set of
// named fields.
func maskPaths(mask *fieldmaskpb.FieldMask, allowed ...string) (map[string]bool, error) {
	if len(mask.GetPaths()) == 0 {
		return nil, invalidf("update_mask is required: name the fields to change among %s", strings.Join(allowed, ", "))
	}
	set := make(map[string]bool, len(mask.GetPaths()))
	for _, p := range mask.GetPaths() {
		if !slices.Contains(allowed, p) {
			return nil, invalidf("update_mask: %q cannot be updated; allowed: %s", p, strings.Join(allowed, ", "))
		}
		set[p] = true
	}
	return set, nil
}

// pcrPolicy converts and checks a PCR policy: indexes 0 to 23, each once, 32-byte values.
func pcrPolicy(field string, values []*inventoryv1.PCRValue) (inventory.PCRPolicy, error) {
	policy := make(inventory.PCRPolicy, len(values))
	for i, v := range values {
		if v.GetIndex() > maxPCRIndex {
			return nil, invalidf("%s[%d].index %d: PCR indexes are 0 to %d", field, i, v.GetIndex(), maxPCRIndex)
		}
		if len(v.GetSha256()) != 32 {
			return nil, invalidf("%s[%d].sha256: %d bytes, a SHA-256 PCR value is 32", field, i, len(v.GetSha256()))
		}
		idx := int(v.GetIndex())
		if _, dup := policy[idx]; dup {
			return nil, invalidf("%s: PCR %d is listed twice", field, idx)
		}
		policy[idx] = bytes.Clone(v.GetSha256())
	}
	return policy, nil
}

// memberIDs checks the node ids of a membership call and returns them sorted, without
// duplicates, so that transactions touching the same rows lock them in the same order.
func memberIDs(ids []string) ([]string, error) {
	if len(ids) == 0 || len(ids) > maxMembers {
		return nil, invalidf("node_ids: %d given, 1 to %d allowed", len(ids), maxMembers)
	}
	for i, id := range ids {
		if err := checkName(fmt.Sprintf("node_ids[%d]", i), id); err != nil {
			return nil, err
		}
	}
	out := slices.Clone(ids)
	slices.Sort(out)
	return slices.Compact(out), nil
}

// eventQuery converts and checks an event filter. Kinds ending in "." become prefixes.
func eventQuery(f *inventoryv1.EventFilter) (inventory.EventQuery, error) {
	var q inventory.EventQuery
	if err := checkFilterValue("filter.node_id", f.GetNodeId()); err != nil {
		return q, err
	}
	q.NodeID = f.GetNodeId()
	if len(f.GetKinds()) > maxFilterKinds {
		return q, invalidf("filter.kinds: %d given, at most %d allowed", len(f.GetKinds()), maxFilterKinds)
	}
	for i, k := range f.GetKinds() {
		field := fmt.Sprintf("filter.kinds[%d]", i)
		if k == "" || k == "." {
			return q, invalidf("%s: empty kind", field)
		}
		if err := checkFilterValue(field, k); err != nil {
			return q, err
		}
		if strings.HasSuffix(k, ".") {
			q.KindPrefixes = append(q.KindPrefixes, k)
		} else {
			q.Kinds = append(q.Kinds, k)
		}
	}
	var err error
	if q.Since, err = filterTime("filter.since", f.GetSince()); err != nil {
		return q, err
	}
	if q.Until, err = filterTime("filter.until", f.GetUntil()); err != nil {
		return q, err
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && !q.Since.Before(q.Until) {
		return q, invalidf("filter: since (%s) must be before until (%s)", q.Since, q.Until)
	}
	return q, nil
}

func checkFilterValue(field, v string) error {
	if len(v) > maxFilterValue {
		return invalidf("%s: %d bytes, at most %d allowed", field, len(v), maxFilterValue)
	}
	if strings.ContainsRune(v, 0) {
		return invalidf("%s: must not contain NUL characters", field)
	}
	return nil
}

func filterTime(field string, ts *timestamppb.Timestamp) (t time.Time, err error) {
	if ts == nil {
		return t, nil
	}
	if err := ts.CheckValid(); err != nil {
		return t, invalidf("%s: %v", field, err)
	}
	return ts.AsTime(), nil
}

// ekInput is the EK of an EnrollNode request, checked and reduced to what the store keeps.
type ekInput struct {
	sha256      []byte
	certificate []byte // DER, nil unless given
	public      []byte // PKIX DER, nil when only the hash was given
	// method and detail go to the enrollment.created event.
	method string
	detail map[string]any
}

// parseEK checks the oneof ek of an EnrollNodeRequest. A certificate or public key yields the
// SHA-256 of the key's PKIX encoding, computed the way the attestor computes it from what a
// node presents (ekcert.SHA256PKIX), so the binding matches whatever form the admin had.
func parseEK(req *inventoryv1.EnrollNodeRequest) (ekInput, error) {
	switch ek := req.GetEk().(type) {
	case *inventoryv1.EnrollNodeRequest_EkCertificate:
		der := ek.EkCertificate
		if len(der) == 0 || len(der) > maxEKCertificate {
			return ekInput{}, invalidf("ek_certificate: %d bytes, 1 to %d allowed", len(der), maxEKCertificate)
		}
		cert, err := ekcert.Parse(der)
		if err != nil {
			return ekInput{}, invalidf("ek_certificate: %v", err)
		}
		in, err := ekFromKey("ek_certificate", cert.PublicKey)
		if err != nil {
			return ekInput{}, err
		}
		in.certificate, in.method = cert.Raw, "certificate"
		in.detail["ek_certificate_issuer"] = cert.Issuer.String()
		in.detail["ek_certificate_serial"] = cert.SerialNumber.String()
		return in, nil
	case *inventoryv1.EnrollNodeRequest_EkPublicKey:
		der := ek.EkPublicKey
		if len(der) == 0 || len(der) > maxEKPublicKey {
			return ekInput{}, invalidf("ek_public_key: %d bytes, 1 to %d allowed", len(der), maxEKPublicKey)
		}
		pub, err := x509.ParsePKIXPublicKey(der)
		if err != nil {
			return ekInput{}, invalidf("ek_public_key: not a PKIX (SubjectPublicKeyInfo DER) public key: %v", err)
		}
		in, err := ekFromKey("ek_public_key", pub)
		if err != nil {
			return ekInput{}, err
		}
		in.method = "public_key"
		return in, nil
	case *inventoryv1.EnrollNodeRequest_EkSha256:
		if len(ek.EkSha256) != 32 {
			return ekInput{}, invalidf("ek_sha256: %d bytes, a SHA-256 is 32", len(ek.EkSha256))
		}
		sum := bytes.Clone(ek.EkSha256)
		return ekInput{sha256: sum, method: "sha256", detail: map[string]any{}}, nil
	default:
		return ekInput{}, invalidf("the EK is required: set exactly one of ek_certificate, ek_public_key or ek_sha256")
	}
}

// ekFromKey accepts the key types a TPM endorsement key can have.
func ekFromKey(field string, pub any) (ekInput, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return ekInput{}, invalidf("%s: RSA key of %d bits; TPM EKs have at least 2048", field, k.N.BitLen())
		}
	case *ecdsa.PublicKey:
	default:
		return ekInput{}, invalidf("%s: a %T is not a TPM endorsement key (RSA or ECC)", field, pub)
	}
	sum, err := ekcert.SHA256PKIX(pub)
	if err != nil {
		return ekInput{}, invalidf("%s: %v", field, err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return ekInput{}, invalidf("%s: %v", field, err)
	}
	return ekInput{sha256: sum[:], public: der, detail: map[string]any{}}, nil
}
