package inventory

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// ErrAttestationSpent is returned by ConsumeAttestation for an attestation that was already
// consumed or has expired.
var ErrAttestationSpent = errors.New("attestation already consumed or expired")

// Attestation is a passed attestation: proof that the node's TPM (EK, AK) vouched for a
// WireGuard key. Short-lived and single-use: it opens at most one tunnel.
type Attestation struct {
	ID                 string
	SessionID          string
	NodeID             string
	EKSHA256           []byte
	AKSHA256           []byte
	WireGuardPublicKey []byte
	CreatedAt          time.Time
	ExpiresAt          time.Time
	ConsumedAt         time.Time // zero until a tunnel consumed it
}

const attestationColumns = `id::text, session_id::text, node_id, ek_sha256, ak_sha256, wireguard_public_key,
	created_at, expires_at, consumed_at`

func scanAttestation(row pgx.Row) (Attestation, error) {
	var (
		a        Attestation
		consumed *time.Time
	)
	err := row.Scan(&a.ID, &a.SessionID, &a.NodeID, &a.EKSHA256, &a.AKSHA256, &a.WireGuardPublicKey,
		&a.CreatedAt, &a.ExpiresAt, &consumed)
	a.CreatedAt, a.ExpiresAt = a.CreatedAt.UTC(), a.ExpiresAt.UTC()
	if consumed != nil {
		a.ConsumedAt = consumed.UTC()
	}
	return a, err
}

// CreateAttestation records a passed attestation, created now and expiring after ttl, and
// appends events (whose Detail may use AttestationIDKey for the new id) — in one round trip
// and, outside InTx, one implicit transaction.
func (q *Queries) CreateAttestation(ctx context.Context, a Attestation, ttl time.Duration, events ...Event) (Attestation, error) {
	now := q.now()
	op := fmt.Sprintf("create attestation for node %q", a.NodeID)
	// The id is chosen here so the events can name it in the same round trip.
	id, err := uuid.NewRandom()
	if err != nil {
		return Attestation{}, fmt.Errorf("%s: %w", op, err)
	}
	for _, e := range events {
		if e.Detail != nil {
			if _, ok := e.Detail[AttestationIDKey]; ok {
				e.Detail[AttestationIDKey] = id.String()
			}
		}
	}
	b := &pgx.Batch{}
	b.Queue(`
		INSERT INTO attestations (id, session_id, node_id, ek_sha256, ak_sha256, wireguard_public_key,
			created_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		RETURNING `+attestationColumns,
		id.String(), a.SessionID, a.NodeID, a.EKSHA256, a.AKSHA256, a.WireGuardPublicKey, now, now.Add(ttl))
	queueEvents(b, now, events)
	br := q.db.SendBatch(ctx, b)
	defer br.Close()
	stored, err := scanAttestation(br.QueryRow())
	if err != nil {
		return Attestation{}, dbError(op, err)
	}
	if err := execEvents(br, events); err != nil {
		return Attestation{}, dbError(op, err)
	}
	if err := br.Close(); err != nil {
		return Attestation{}, dbError(op, err)
	}
	return stored, nil
}

// AttestationIDKey in an event's Detail passed to CreateAttestation is filled with the new
// attestation's id.
const AttestationIDKey = "attestation_id"

// GetAttestation returns an attestation by id.
func (q *Queries) GetAttestation(ctx context.Context, id string) (Attestation, error) {
	a, err := scanAttestation(q.db.QueryRow(ctx, `SELECT `+attestationColumns+` FROM attestations WHERE id = $1`, id))
	if err != nil {
		return Attestation{}, dbError(fmt.Sprintf("get attestation %s", id), err)
	}
	return a, nil
}

// ConsumeAttestation marks an unconsumed, unexpired attestation consumed and returns it; exactly
// one caller succeeds. It is ErrNotFound for an unknown id and ErrAttestationSpent (with the
// attestation) when it was consumed before or has expired.
func (q *Queries) ConsumeAttestation(ctx context.Context, id string) (Attestation, error) {
	now := q.now()
	op := fmt.Sprintf("consume attestation %s", id)
	a, err := scanAttestation(q.db.QueryRow(ctx, `
		UPDATE attestations SET consumed_at = $2
		WHERE id = $1 AND consumed_at IS NULL AND expires_at > $2
		RETURNING `+attestationColumns, id, now))
	if err == nil {
		return a, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return Attestation{}, dbError(op, err)
	}
	a, err = q.GetAttestation(ctx, id)
	if err != nil {
		return Attestation{}, err
	}
	return a, fmt.Errorf("%s: %w", op, ErrAttestationSpent)
}

// ConsumeAttestationFor is ConsumeAttestation for opening a tunnel, in one round trip: it
// consumes the attestation only if it is also bound to key and its node is enabled. It reports
// false, and changes nothing, when no such attestation was there to consume (unknown, bound to
// another key, consumed before, expired, its node disabled): the caller reads the attestation
// and its node to tell which. Concurrent callers for one attestation consume it once.
func (q *Queries) ConsumeAttestationFor(ctx context.Context, id string, key []byte) (Attestation, bool, error) {
	a, err := scanAttestation(q.db.QueryRow(ctx, `
		UPDATE attestations a SET consumed_at = $2
		WHERE id = $1 AND consumed_at IS NULL AND expires_at > $2 AND wireguard_public_key = $3
			AND EXISTS (SELECT 1 FROM nodes n WHERE n.id = a.node_id AND n.enabled)
		RETURNING `+attestationColumns, id, q.now(), key))
	if errors.Is(err, pgx.ErrNoRows) {
		return Attestation{}, false, nil
	}
	if err != nil {
		return Attestation{}, false, dbError(fmt.Sprintf("consume attestation %s", id), err)
	}
	return a, true, nil
}
