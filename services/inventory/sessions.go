package inventory

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// SessionState is where an attestation session is in its single use.
type SessionState string

// Session states, as the schema's attestation_sessions_state_valid check allows them.
const (
	SessionPending    SessionState = "pending"
	SessionConsumed   SessionState = "consumed"   // CompleteAttestation took it, whatever the outcome
	SessionSuperseded SessionState = "superseded" // a newer BeginAttestation of the same EK replaced it
	SessionExpired    SessionState = "expired"    // its TTL passed before it was used
)

// ErrSessionEnded is returned by TakeSession for a session that is no longer pending: a replay,
// a superseded session, or one already swept as expired.
var ErrSessionEnded = errors.New("attestation session has ended")

// Session is a BeginAttestation challenge waiting for its answer. Only a hash of the credential
// secret is kept.
type Session struct {
	ID                 string
	NodeID             string
	EKSHA256           []byte
	AKPublic           []byte // TPMT_PUBLIC
	AKSHA256           []byte
	WireGuardPublicKey []byte
	Nonce              []byte
	SecretSHA256       []byte
	State              SessionState
	CreatedAt          time.Time
	ExpiresAt          time.Time
	EndedAt            time.Time // zero while pending
}

const sessionColumns = `id::text, node_id, ek_sha256, ak_public, ak_sha256, wireguard_public_key, nonce,
	secret_sha256, state, created_at, expires_at, ended_at`

func scanSession(row pgx.Row) (Session, error) {
	var (
		s     Session
		ended *time.Time
	)
	err := row.Scan(&s.ID, &s.NodeID, &s.EKSHA256, &s.AKPublic, &s.AKSHA256, &s.WireGuardPublicKey,
		&s.Nonce, &s.SecretSHA256, &s.State, &s.CreatedAt, &s.ExpiresAt, &ended)
	s.CreatedAt, s.ExpiresAt = s.CreatedAt.UTC(), s.ExpiresAt.UTC()
	if ended != nil {
		s.EndedAt = ended.UTC()
	}
	return s, err
}

// CreateSession supersedes the pending session of the same EK, if any, records s as pending,
// created now and expiring after ttl, and appends events — all in one round trip and, outside
// InTx, one implicit transaction. A TPM has at most one session in flight.
func (q *Queries) CreateSession(ctx context.Context, s Session, ttl time.Duration, events ...Event) (Session, error) {
	now := q.now()
	op := fmt.Sprintf("create attestation session for node %q", s.NodeID)
	b := &pgx.Batch{}
	b.Queue(`UPDATE attestation_sessions SET state = 'superseded', ended_at = $2
		WHERE ek_sha256 = $1 AND state = 'pending'`, s.EKSHA256, now)
	b.Queue(`
		INSERT INTO attestation_sessions (node_id, ek_sha256, ak_public, ak_sha256, wireguard_public_key,
			nonce, secret_sha256, created_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
		RETURNING `+sessionColumns,
		s.NodeID, s.EKSHA256, s.AKPublic, s.AKSHA256, s.WireGuardPublicKey, s.Nonce, s.SecretSHA256,
		now, now.Add(ttl))
	queueEvents(b, now, events)
	br := q.db.SendBatch(ctx, b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return Session{}, dbError(op, err)
	}
	stored, err := scanSession(br.QueryRow())
	if err != nil {
		return Session{}, dbError(op, err)
	}
	if err := execEvents(br, events); err != nil {
		return Session{}, dbError(op, err)
	}
	if err := br.Close(); err != nil {
		return Session{}, dbError(op, err)
	}
	return stored, nil
}

// Subject is what BeginAttestation needs to know about a node, read at once.
type Subject struct {
	Enabled bool
	// Enrollment is nil when the node has none.
	Enrollment *Enrollment
	// TrustOnFirstUse is set when a group of the node opted in.
	TrustOnFirstUse bool
	// Sessions begun since the rate window's start, for the node and for the presented EK.
	SessionsByNode, SessionsByEK int
}

// AttestationSubject reads a node, its enrollment, its groups' trust-on-first-use opt-in and
// its recent sessions (and the EK's) in one query. It is ErrNotFound for an unknown node.
func (q *Queries) AttestationSubject(ctx context.Context, nodeID string, ekSHA256 []byte, since time.Time) (Subject, error) {
	var (
		sub    Subject
		ek     []byte
		cert   []byte
		pub    []byte
		source *string
		at     *time.Time
	)
	err := q.db.QueryRow(ctx, `
		SELECT n.enabled, e.ek_sha256, e.ek_certificate, e.ek_public, e.source, e.created_at,
			EXISTS (SELECT 1 FROM group_members gm JOIN groups g ON g.name = gm.group_name
				WHERE gm.node_id = n.id AND g.trust_on_first_use),
			(SELECT count(*) FROM attestation_sessions s WHERE s.node_id = n.id AND s.created_at >= $3),
			(SELECT count(*) FROM attestation_sessions s WHERE s.ek_sha256 = $2 AND s.created_at >= $3)
		FROM nodes n LEFT JOIN ek_enrollments e ON e.node_id = n.id
		WHERE n.id = $1`, nodeID, ekSHA256, since).Scan(
		&sub.Enabled, &ek, &cert, &pub, &source, &at, &sub.TrustOnFirstUse, &sub.SessionsByNode, &sub.SessionsByEK)
	if err != nil {
		return Subject{}, dbError(fmt.Sprintf("read attestation subject %q", nodeID), err)
	}
	if ek != nil {
		sub.Enrollment = &Enrollment{NodeID: nodeID, EKSHA256: ek, EKCertificate: cert, EKPublic: pub,
			Source: EnrollmentSource(*source), CreatedAt: at.UTC()}
	}
	return sub, nil
}

// CountSessionsSince counts the sessions begun at or after since for the node and for the EK:
// the attestor's rate limits, shared by every replica through the database.
func (q *Queries) CountSessionsSince(ctx context.Context, nodeID string, ekSHA256 []byte, since time.Time) (byNode, byEK int, err error) {
	err = q.db.QueryRow(ctx, `
		SELECT count(*) FILTER (WHERE node_id = $1), count(*) FILTER (WHERE ek_sha256 = $2)
		FROM attestation_sessions
		WHERE (node_id = $1 OR ek_sha256 = $2) AND created_at >= $3`,
		nodeID, ekSHA256, since).Scan(&byNode, &byEK)
	if err != nil {
		return 0, 0, dbError("count recent attestation sessions", err)
	}
	return byNode, byEK, nil
}

// TakeSession ends a pending session atomically and returns it: its state becomes consumed, or
// expired if its TTL has passed (the caller must refuse it). Exactly one caller can take a
// session. It is ErrNotFound for an unknown id and ErrSessionEnded (with the session, whose State
// says how it ended) for one that is no longer pending.
func (q *Queries) TakeSession(ctx context.Context, id string) (Session, error) {
	now := q.now()
	op := fmt.Sprintf("take attestation session %s", id)
	row := q.db.QueryRow(ctx, `
		UPDATE attestation_sessions
		SET state = CASE WHEN expires_at > $2 THEN 'consumed' ELSE 'expired' END, ended_at = $2
		WHERE id = $1 AND state = 'pending'
		RETURNING `+sessionColumns, id, now)
	s, err := scanSession(row)
	if err == nil {
		return s, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return Session{}, dbError(op, err)
	}
	s, err = scanSession(q.db.QueryRow(ctx, `SELECT `+sessionColumns+` FROM attestation_sessions WHERE id = $1`, id))
	if err != nil {
		return Session{}, dbError(op, err)
	}
	return s, fmt.Errorf("%s: %w (%s)", op, ErrSessionEnded, s.State)
}

// Completion is what CompleteAttestation needs besides the session.
type Completion struct {
	NodeEnabled bool
	// Policies holds the PCR policy of each of the node's groups that has one.
	Policies map[string]PCRPolicy
}

// TakeSessionForCompletion is TakeSession that also reads, in the same statement, whether the
// node is enabled and the PCR policies of its groups.
func (q *Queries) TakeSessionForCompletion(ctx context.Context, id string) (Session, Completion, error) {
	now := q.now()
	var (
		s       Session
		c       Completion
		ended   *time.Time
		groups  []string
		indexes []int16
		values  [][]byte
	)
	err := q.db.QueryRow(ctx, `
		WITH taken AS (
			UPDATE attestation_sessions
			SET state = CASE WHEN expires_at > $2 THEN 'consumed' ELSE 'expired' END, ended_at = $2
			WHERE id = $1 AND state = 'pending'
			RETURNING `+sessionColumns+`
		)
		SELECT taken.*, n.enabled,
			ARRAY(SELECT p.group_name FROM group_members gm JOIN group_pcr_policies p ON p.group_name = gm.group_name
				WHERE gm.node_id = taken.node_id ORDER BY p.group_name, p.pcr),
			ARRAY(SELECT p.pcr FROM group_members gm JOIN group_pcr_policies p ON p.group_name = gm.group_name
				WHERE gm.node_id = taken.node_id ORDER BY p.group_name, p.pcr),
			ARRAY(SELECT p.sha256 FROM group_members gm JOIN group_pcr_policies p ON p.group_name = gm.group_name
				WHERE gm.node_id = taken.node_id ORDER BY p.group_name, p.pcr)
		FROM taken JOIN nodes n ON n.id = taken.node_id`, id, now).Scan(
		&s.ID, &s.NodeID, &s.EKSHA256, &s.AKPublic, &s.AKSHA256, &s.WireGuardPublicKey, &s.Nonce,
		&s.SecretSHA256, &s.State, &s.CreatedAt, &s.ExpiresAt, &ended,
		&c.NodeEnabled, &groups, &indexes, &values)
	if errors.Is(err, pgx.ErrNoRows) {
		// Not pending (or unknown): TakeSession says which, without changing anything.
		s, err := q.TakeSession(ctx, id)
		return s, Completion{}, err
	}
	if err != nil {
		return Session{}, Completion{}, dbError(fmt.Sprintf("take attestation session %s", id), err)
	}
	s.CreatedAt, s.ExpiresAt = s.CreatedAt.UTC(), s.ExpiresAt.UTC()
	if ended != nil {
		s.EndedAt = ended.UTC()
	}
	c.Policies = map[string]PCRPolicy{}
	for i, g := range groups {
		if c.Policies[g] == nil {
			c.Policies[g] = PCRPolicy{}
		}
		c.Policies[g][int(indexes[i])] = values[i]
	}
	return s, c, nil
}

// ExpireSessions marks pending sessions past their expiry as expired and returns how many.
func (q *Queries) ExpireSessions(ctx context.Context) (int64, error) {
	now := q.now()
	tag, err := q.db.Exec(ctx, `
		UPDATE attestation_sessions SET state = 'expired', ended_at = $1
		WHERE state = 'pending' AND expires_at <= $1`, now)
	if err != nil {
		return 0, dbError("expire attestation sessions", err)
	}
	return tag.RowsAffected(), nil
}
