package inventory

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnrollmentSource says who vouched for an EK binding.
type EnrollmentSource string

// Enrollment sources, as the schema's ek_enrollments_source_valid check allows them.
const (
	// SourceAdmin: an operator enrolled the EK through the admin API.
	SourceAdmin EnrollmentSource = "admin"
	// SourceCA: the attestor validated the EK certificate against a trusted manufacturer CA.
	SourceCA EnrollmentSource = "ca"
	// SourceTOFU: the node's group opted in to trust on first use and this was the first EK seen.
	SourceTOFU EnrollmentSource = "tofu"
)

// Enrollment binds one EK to one node. The binding is immutable: changing it means deleting
// the enrollment and enrolling again.
type Enrollment struct {
	NodeID        string
	EKSHA256      []byte // SHA-256 of the PKIX (DER) EK public key, 32 bytes
	EKCertificate []byte // DER, nil when enrolled by public key only
	EKPublic      []byte // PKIX DER, nil when only the hash is known
	Source        EnrollmentSource
	CreatedAt     time.Time
}

const enrollmentColumns = `node_id, ek_sha256, ek_certificate, ek_public, source, created_at`

func scanEnrollment(row pgx.Row) (Enrollment, error) {
	var e Enrollment
	err := row.Scan(&e.NodeID, &e.EKSHA256, &e.EKCertificate, &e.EKPublic, &e.Source, &e.CreatedAt)
	e.CreatedAt = e.CreatedAt.UTC()
	return e, err
}

// Enroll binds e.EKSHA256 to e.NodeID and returns the stored enrollment. Enrolling the EK a
// node already has is idempotent and returns the existing enrollment unchanged (created is
// false). It is ErrConflict if the node has a different EK or the EK belongs to another node,
// ErrNotFound if the node does not exist, and ErrInvalid for a hash that is not 32 bytes or an
// unknown source.
func (q *Queries) Enroll(ctx context.Context, e Enrollment) (stored Enrollment, created bool, err error) {
	op := fmt.Sprintf("enroll EK %s for node %q", shortHash(e.EKSHA256), e.NodeID)
	row := q.db.QueryRow(ctx, `
		INSERT INTO ek_enrollments (node_id, ek_sha256, ek_certificate, ek_public, source, created_at)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (node_id) DO NOTHING
		RETURNING `+enrollmentColumns,
		e.NodeID, e.EKSHA256, e.EKCertificate, e.EKPublic, string(e.Source), q.now())
	stored, err = scanEnrollment(row)
	switch {
	case err == nil:
		return stored, true, nil
	case isForeignKeyViolation(err):
		return Enrollment{}, false, fmt.Errorf("%s: the node does not exist: %w", op, ErrNotFound)
	case !errors.Is(err, pgx.ErrNoRows):
		return Enrollment{}, false, dbError(op, err)
	}

	// The node already has an enrollment: the same EK is a repeat, another one a conflict.
	existing, err := q.GetEnrollment(ctx, e.NodeID)
	if err != nil {
		// Deleted between the two statements: the caller may retry.
		return Enrollment{}, false, fmt.Errorf("%s: enrollment changed concurrently: %w", op, ErrConflict)
	}
	if !bytes.Equal(existing.EKSHA256, e.EKSHA256) {
		return Enrollment{}, false, fmt.Errorf("%s: node is enrolled with EK %s: %w",
			op, shortHash(existing.EKSHA256), ErrConflict)
	}
	return existing, false, nil
}

// GetEnrollment returns the enrollment of the node, or ErrNotFound.
func (q *Queries) GetEnrollment(ctx context.Context, nodeID string) (Enrollment, error) {
	e, err := scanEnrollment(q.db.QueryRow(ctx,
		`SELECT `+enrollmentColumns+` FROM ek_enrollments WHERE node_id = $1`, nodeID))
	if err != nil {
		return Enrollment{}, dbError(fmt.Sprintf("get enrollment of node %q", nodeID), err)
	}
	return e, nil
}

// GetEnrollmentByEK returns the enrollment of the EK with this SHA-256, or ErrNotFound.
func (q *Queries) GetEnrollmentByEK(ctx context.Context, ekSHA256 []byte) (Enrollment, error) {
	e, err := scanEnrollment(q.db.QueryRow(ctx,
		`SELECT `+enrollmentColumns+` FROM ek_enrollments WHERE ek_sha256 = $1`, ekSHA256))
	if err != nil {
		return Enrollment{}, dbError(fmt.Sprintf("get enrollment of EK %s", shortHash(ekSHA256)), err)
	}
	return e, nil
}

// DeleteEnrollment removes the node's enrollment so that another EK can be enrolled, or
// returns ErrNotFound.
func (q *Queries) DeleteEnrollment(ctx context.Context, nodeID string) error {
	tag, err := q.db.Exec(ctx, `DELETE FROM ek_enrollments WHERE node_id = $1`, nodeID)
	op := fmt.Sprintf("delete enrollment of node %q", nodeID)
	if err != nil {
		return dbError(op, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	return nil
}

// shortHash renders the first bytes of a hash for error messages and logs.
func shortHash(h []byte) string {
	if len(h) > 8 {
		return hex.EncodeToString(h[:8]) + "…"
	}
	return hex.EncodeToString(h)
}

// EnrolledNodes returns which of the nodes have an enrollment: the set of their ids. One query
// serves a whole page of nodes.
func (q *Queries) EnrolledNodes(ctx context.Context, nodeIDs []string) (map[string]bool, error) {
	out := make(map[string]bool)
	if len(nodeIDs) == 0 {
		return out, nil
	}
	rows, err := q.db.Query(ctx, `SELECT node_id FROM ek_enrollments WHERE node_id = ANY ($1::text[])`, nodeIDs)
	if err != nil {
		return nil, dbError("enrolled nodes", err)
	}
	var id string
	_, err = pgx.ForEachRow(rows, []any{&id}, func() error {
		out[id] = true
		return nil
	})
	if err != nil {
		return nil, dbError("enrolled nodes", err)
	}
	return out, nil
}
