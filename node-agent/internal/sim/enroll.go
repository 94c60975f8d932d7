package sim

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	inventoryv1 "github.com/attestboot/attestboot/proto/attestboot/inventory/v1"
)

// Enroll is how the simulator registers its nodes through the InventoryService before they
// boot: each node is created (enabled) and bound to its TPM's EK hash, and optionally put in a
// group. Running it again is harmless: existing nodes, groups and identical enrollments are
// left as they are.
type Enroll struct {
	// Addr of the InventoryService; default the attestor's address, which serves it.
	Addr string
	// TLS is the admin's TLS configuration: the CA and, unless Token is set, the admin client
	// certificate.
	TLS *tls.Config
	// Token is an admin bearer token, instead of a client certificate.
	Token string
	// Group, if set, is created if missing and receives every node.
	Group string
}

func (e *Enroll) validate(c *Config) error {
	if e.Addr == "" {
		e.Addr = c.Attestor
	}
	if e.TLS == nil {
		return errors.New("sim: enrolling needs an admin TLS configuration")
	}
	if e.Token == "" && len(e.TLS.Certificates) == 0 && e.TLS.GetClientCertificate == nil {
		return errors.New("sim: enrolling needs an admin credential (client certificate or token)")
	}
	return nil
}

// enrollBatch bounds the node ids of one AddGroupMembers call.
const enrollBatch = 500

func enroll(ctx context.Context, cfg *Config, nodes []*node) error {
	e := cfg.Enroll
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(e.TLS))}
	if e.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearerToken(e.Token)))
	}
	conn, err := grpc.NewClient(e.Addr, opts...)
	if err != nil {
		return fmt.Errorf("sim: inventory client: %w", err)
	}
	defer conn.Close()
	inv := inventoryv1.NewInventoryServiceClient(conn)

	if e.Group != "" {
		_, err := inv.CreateGroup(ctx, &inventoryv1.CreateGroupRequest{Group: &inventoryv1.Group{Name: e.Group}})
		if err != nil && status.Code(err) != codes.AlreadyExists {
			return fmt.Errorf("sim: create group %s: %w", e.Group, err)
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, n := range nodes {
		g.Go(func() error { return enrollNode(gctx, inv, n) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if e.Group == "" {
		return nil
	}
	for i := 0; i < len(nodes); i += enrollBatch {
		var ids []string
		for _, n := range nodes[i:min(i+enrollBatch, len(nodes))] {
			ids = append(ids, n.id)
		}
		if _, err := inv.AddGroupMembers(ctx, &inventoryv1.AddGroupMembersRequest{Group: e.Group, NodeIds: ids}); err != nil {
			return fmt.Errorf("sim: add nodes to group %s: %w", e.Group, err)
		}
	}
	return nil
}

func enrollNode(ctx context.Context, inv inventoryv1.InventoryServiceClient, n *node) error {
	_, err := inv.CreateNode(ctx, &inventoryv1.CreateNodeRequest{Node: &inventoryv1.Node{Id: n.id, Hostname: n.id, Enabled: true}})
	if err != nil && status.Code(err) != codes.AlreadyExists {
		return fmt.Errorf("sim: create node %s: %w", n.id, err)
	}
	sum := n.tpm.EKSHA256()
	_, err = inv.EnrollNode(ctx, &inventoryv1.EnrollNodeRequest{NodeId: n.id, Ek: &inventoryv1.EnrollNodeRequest_EkSha256{EkSha256: sum[:]}})
	if status.Code(err) == codes.AlreadyExists {
		// The same EK again is fine (and the attestor answers OK to it anyway); another EK
		// means this node number was enrolled with another TPM, which would fail every boot.
		got, gerr := inv.GetEnrollment(ctx, &inventoryv1.GetEnrollmentRequest{NodeId: n.id})
		if gerr == nil && bytes.Equal(got.GetEnrollment().GetEkSha256(), sum[:]) {
			return nil
		}
		return fmt.Errorf("sim: node %s is enrolled with another EK than its TPM %d (delete the enrollment, or use another -prefix or -tpm-first): %w",
			n.id, n.tpm.Index(), err)
	}
	if err != nil {
		return fmt.Errorf("sim: enroll node %s: %w", n.id, err)
	}
	return nil
}

// bearerToken sends the admin token as services/grpcserver expects it ("authorization: Bearer
// ..."). It is not imported from there because that would link the whole server side (metrics
// and all) into nodesim.
type bearerToken string

func (t bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

// RequireTransportSecurity keeps the token off connections without TLS.
func (bearerToken) RequireTransportSecurity() bool { return true }
