// Package admin is the MetadataService gRPC API: operators write each scope's cloud-init data
// (validated on write), put, list and delete secrets (values go in, never out), preview a
// node's documents with secrets redacted, and export the SSH host keys nodes reported.
package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/attestboot/attestboot/metadata/internal/nodedocs"
	"github.com/attestboot/attestboot/metadata/internal/render"
	"github.com/attestboot/attestboot/metadata/internal/seal"
	metadatav1 "github.com/attestboot/attestboot/proto/attestboot/metadata/v1"
	"github.com/attestboot/attestboot/services/grpcserver"
	"github.com/attestboot/attestboot/services/inventory"
)

// Limits of the proto contract.
const (
	maxDocument      = 256 << 10
	maxNetworkConfig = 64 << 10
	maxSecret        = 64 << 10
)

var secretNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Server implements metadatav1.MetadataServiceServer.
type Server struct {
	// Unsafe, not Unimplemented: a new RPC is a compile error until written.
	metadatav1.UnsafeMetadataServiceServer

	store *inventory.Store
	keys  *seal.Keyring
	docs  *nodedocs.Builder
	log   *slog.Logger
	// changed is called after every write of cloud-init data or secrets.
	changed func()
}

var _ metadatav1.MetadataServiceServer = (*Server)(nil)

// New returns the API. keys may be nil: PutSecret then fails with FailedPrecondition. changed,
// if not nil, is called after every successful write of cloud-init data or secrets, so that the
// datasource of this process serves the change at once instead of after its cache expires.
func New(store *inventory.Store, keys *seal.Keyring, docs *nodedocs.Builder, changed func(), logger *slog.Logger) (*Server, error) {
	if store == nil || docs == nil {
		return nil, errors.New("admin: nil store or document builder")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if changed == nil {
		changed = func() {}
	}
	return &Server{store: store, keys: keys, docs: docs, log: logger, changed: changed}, nil
}

// Register registers the service on r; every method is admin-only.
func (s *Server) Register(r grpc.ServiceRegistrar) { metadatav1.RegisterMetadataServiceServer(r, s) }

// invalidArgument is a request refused at the edge.
type invalidArgument struct{ msg string }

func (e *invalidArgument) Error() string { return e.msg }

func invalidf(format string, args ...any) error {
	return &invalidArgument{msg: fmt.Sprintf(format, args...)}
}

var errNoKey = errors.New("no key-encryption key configured (-kek-file)")

// toStatus is the one place errors become gRPC codes. No message here can hold a secret value:
// values never enter errors.
func (s *Server) toStatus(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	var invalid *invalidArgument
	switch {
	case errors.As(err, &invalid):
		return status.Error(codes.InvalidArgument, invalid.msg)
	case ctx.Err() != nil:
		return status.FromContextError(ctx.Err()).Err()
	case errors.Is(err, errNoKey):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, inventory.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, inventory.ErrConflict):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, inventory.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, render.ErrSecretUnavailable), errors.Is(err, seal.ErrOpen):
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	method, _ := grpc.Method(ctx)
	s.log.ErrorContext(ctx, "metadata admin: internal error", "method", method, "error", err)
	return status.Error(codes.Internal, "internal error (details in the server log)")
}

func scopeFromProto(p *metadatav1.Scope) (inventory.Scope, error) {
	switch v := p.GetScope().(type) {
	case *metadatav1.Scope_Defaults:
		if !v.Defaults {
			return inventory.Scope{}, invalidf("scope.defaults must be true when set")
		}
		return inventory.DefaultsScope, nil
	case *metadatav1.Scope_Group:
		if v.Group == "" {
			return inventory.Scope{}, invalidf("scope.group is empty")
		}
		return inventory.GroupScope(v.Group), nil
	case *metadatav1.Scope_NodeId:
		if v.NodeId == "" {
			return inventory.Scope{}, invalidf("scope.node_id is empty")
		}
		return inventory.NodeScope(v.NodeId), nil
	}
	return inventory.Scope{}, invalidf("scope: set exactly one of defaults, group, node_id")
}

func scopeToProto(s inventory.Scope) *metadatav1.Scope {
	switch {
	case s.NodeID != "":
		return &metadatav1.Scope{Scope: &metadatav1.Scope_NodeId{NodeId: s.NodeID}}
	case s.Group != "":
		return &metadatav1.Scope{Scope: &metadatav1.Scope_Group{Group: s.Group}}
	}
	return &metadatav1.Scope{Scope: &metadatav1.Scope_Defaults{Defaults: true}}
}

func dataToProto(d inventory.CloudInitData) (*metadatav1.CloudInitData, error) {
	meta, err := structpb.NewStruct(d.MetaData)
	if err != nil {
		return nil, fmt.Errorf("meta-data of %s: %w", d.Scope, err)
	}
	return &metadatav1.CloudInitData{
		Scope: scopeToProto(d.Scope), MetaData: meta, UserData: d.UserData, VendorData: d.VendorData,
		NetworkConfig: d.NetworkConfig, UpdateTime: timestamppb.New(d.UpdatedAt),
	}, nil
}

// GetCloudInitData returns a scope's data.
func (s *Server) GetCloudInitData(ctx context.Context, req *metadatav1.GetCloudInitDataRequest) (*metadatav1.GetCloudInitDataResponse, error) {
	scope, err := scopeFromProto(req.GetScope())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	d, err := s.store.GetCloudInitData(ctx, scope)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	p, err := dataToProto(d)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &metadatav1.GetCloudInitDataResponse{Data: p}, nil
}

// SetCloudInitData validates and stores a scope's data.
func (s *Server) SetCloudInitData(ctx context.Context, req *metadatav1.SetCloudInitDataRequest) (*metadatav1.SetCloudInitDataResponse, error) {
	d := req.GetData()
	scope, err := scopeFromProto(d.GetScope())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	if err := s.validateData(ctx, scope, d); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	var stored inventory.CloudInitData
	err = s.store.InTx(ctx, func(q *inventory.Queries) error {
		var err error
		stored, err = q.SetCloudInitData(ctx, inventory.CloudInitData{
			Scope: scope, MetaData: d.GetMetaData().AsMap(),
			UserData: d.GetUserData(), VendorData: d.GetVendorData(), NetworkConfig: d.GetNetworkConfig(),
		})
		if err != nil {
			return err
		}
		return s.record(ctx, q, scope, "metadata.data_set", nil)
	})
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	p, err := dataToProto(stored)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	s.changed()
	return &metadatav1.SetCloudInitDataResponse{Data: p}, nil
}

func (s *Server) validateData(ctx context.Context, scope inventory.Scope, d *metadatav1.CloudInitData) error {
	if len(d.GetUserData()) > maxDocument || len(d.GetVendorData()) > maxDocument {
		return invalidf("user_data and vendor_data: at most %d bytes each", maxDocument)
	}
	if len(d.GetNetworkConfig()) > maxNetworkConfig {
		return invalidf("network_config: at most %d bytes", maxNetworkConfig)
	}
	for _, k := range []string{"instance-id", "local-hostname", "hostname"} {
		if _, ok := d.GetMetaData().GetFields()[k]; ok {
			return invalidf("meta_data: %q is set by the service", k)
		}
	}
	var used []string
	for _, doc := range []struct {
		kind  render.Kind
		field string
		text  string
	}{
		{render.UserData, "user_data", d.GetUserData()},
		{render.VendorData, "vendor_data", d.GetVendorData()},
		{render.NetworkConfig, "network_config", d.GetNetworkConfig()},
	} {
		names, err := render.Check(doc.kind, doc.text)
		if err != nil {
			return invalidf("%s: %v", doc.field, err)
		}
		used = append(used, names...)
	}
	if len(used) == 0 {
		return nil
	}
	// A node's data must find each secret for that node; defaults and groups may rely on
	// per-node secrets, so any scope holding the name will do.
	var available []string
	if scope.NodeID != "" {
		ss, err := s.store.SecretsOfNode(ctx, scope.NodeID)
		if err != nil {
			return err
		}
		for _, x := range ss {
			available = append(available, x.Name)
		}
	} else {
		var err error
		if available, err = s.store.SecretNames(ctx); err != nil {
			return err
		}
	}
	for _, n := range used {
		if !slices.Contains(available, n) {
			return invalidf("secret %q is used but does not exist for %s: put it first", n, scope)
		}
	}
	return nil
}

// DeleteCloudInitData removes a scope's data.
func (s *Server) DeleteCloudInitData(ctx context.Context, req *metadatav1.DeleteCloudInitDataRequest) (*metadatav1.DeleteCloudInitDataResponse, error) {
	scope, err := scopeFromProto(req.GetScope())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	err = s.store.InTx(ctx, func(q *inventory.Queries) error {
		if err := q.DeleteCloudInitData(ctx, scope); err != nil {
			return err
		}
		return s.record(ctx, q, scope, "metadata.data_deleted", nil)
	})
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	s.changed()
	return &metadatav1.DeleteCloudInitDataResponse{}, nil
}

func secretToProto(x inventory.Secret) *metadatav1.SecretInfo {
	return &metadatav1.SecretInfo{
		Scope: scopeToProto(x.Scope), Name: x.Name, KeyId: x.KeyID, UntilPhoneHome: x.UntilPhoneHome,
		CreateTime: timestamppb.New(x.CreatedAt), UpdateTime: timestamppb.New(x.UpdatedAt),
	}
}

// PutSecret seals and stores a secret.
func (s *Server) PutSecret(ctx context.Context, req *metadatav1.PutSecretRequest) (*metadatav1.PutSecretResponse, error) {
	scope, err := scopeFromProto(req.GetScope())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	switch {
	case !secretNameRE.MatchString(req.GetName()):
		return nil, s.toStatus(ctx, invalidf("name: 1 to 128 characters of [A-Za-z0-9._-], starting with a letter or digit"))
	case len(req.GetValue()) == 0 || len(req.GetValue()) > maxSecret:
		return nil, s.toStatus(ctx, invalidf("value: 1 to %d bytes", maxSecret))
	case s.keys == nil:
		return nil, s.toStatus(ctx, errNoKey)
	}
	ct, nonce, keyID, err := s.keys.Seal(scope.String(), req.GetName(), req.GetValue())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	var stored inventory.Secret
	err = s.store.InTx(ctx, func(q *inventory.Queries) error {
		var err error
		stored, err = q.PutSecret(ctx, inventory.Secret{Scope: scope, Name: req.GetName(), Ciphertext: ct, Nonce: nonce,
			KeyID: keyID, UntilPhoneHome: req.GetUntilPhoneHome()})
		if err != nil {
			return err
		}
		return s.record(ctx, q, scope, "metadata.secret_put", map[string]any{"secret": req.GetName(), "key_id": keyID})
	})
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	s.changed()
	return &metadatav1.PutSecretResponse{Secret: secretToProto(stored)}, nil
}

// ListSecrets lists secrets without values.
func (s *Server) ListSecrets(ctx context.Context, req *metadatav1.ListSecretsRequest) (*metadatav1.ListSecretsResponse, error) {
	var filter *inventory.Scope
	if req.GetScope() != nil {
		sc, err := scopeFromProto(req.GetScope())
		if err != nil {
			return nil, s.toStatus(ctx, err)
		}
		filter = &sc
	}
	ss, err := s.store.ListSecrets(ctx, filter)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	out := &metadatav1.ListSecretsResponse{}
	for _, x := range ss {
		out.Secrets = append(out.Secrets, secretToProto(x))
	}
	return out, nil
}

// DeleteSecret removes a secret.
func (s *Server) DeleteSecret(ctx context.Context, req *metadatav1.DeleteSecretRequest) (*metadatav1.DeleteSecretResponse, error) {
	scope, err := scopeFromProto(req.GetScope())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	if !secretNameRE.MatchString(req.GetName()) {
		return nil, s.toStatus(ctx, invalidf("name: 1 to 128 characters of [A-Za-z0-9._-], starting with a letter or digit"))
	}
	err = s.store.InTx(ctx, func(q *inventory.Queries) error {
		if err := q.DeleteSecret(ctx, scope, req.GetName()); err != nil {
			return err
		}
		return s.record(ctx, q, scope, "metadata.secret_deleted", map[string]any{"secret": req.GetName()})
	})
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	s.changed()
	return &metadatav1.DeleteSecretResponse{}, nil
}

// RenderPreview renders a node's documents with secrets redacted.
func (s *Server) RenderPreview(ctx context.Context, req *metadatav1.RenderPreviewRequest) (*metadatav1.RenderPreviewResponse, error) {
	if req.GetNodeId() == "" {
		return nil, s.toStatus(ctx, invalidf("node_id is empty"))
	}
	node, err := s.store.GetNode(ctx, req.GetNodeId())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	tun, err := s.store.OpenTunnelOfNode(ctx, node.ID)
	if err != nil && !errors.Is(err, inventory.ErrNotFound) {
		return nil, s.toStatus(ctx, err)
	}
	out := &metadatav1.RenderPreviewResponse{}
	for _, k := range render.Kinds {
		res, err := s.docs.Render(ctx, k, node, tun, nodedocs.Preview)
		if err != nil {
			return nil, s.toStatus(ctx, err)
		}
		switch k {
		case render.MetaData:
			out.MetaData = string(res.Body)
		case render.UserData:
			out.UserData = string(res.Body)
		case render.VendorData:
			out.VendorData = string(res.Body)
		case render.NetworkConfig:
			out.NetworkConfig = string(res.Body)
		}
		for _, n := range res.Secrets {
			if !slices.Contains(out.Secrets, n) {
				out.Secrets = append(out.Secrets, n)
			}
		}
	}
	slices.Sort(out.Secrets)
	return out, nil
}

// ListHostKeys returns reported SSH host keys.
func (s *Server) ListHostKeys(ctx context.Context, req *metadatav1.ListHostKeysRequest) (*metadatav1.ListHostKeysResponse, error) {
	keys, err := s.store.ListHostKeys(ctx, req.GetNodeId())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	out := &metadatav1.ListHostKeysResponse{}
	for _, k := range keys {
		out.HostKeys = append(out.HostKeys, &metadatav1.HostKey{NodeId: k.NodeID, Hostname: k.Hostname, Type: k.Type,
			PublicKey: k.PublicKey, ReportTime: timestamppb.New(k.ReportedAt)})
	}
	return out, nil
}

// record appends an admin event in the transaction of the change, naming the admin.
func (s *Server) record(ctx context.Context, q *inventory.Queries, scope inventory.Scope, kind string, detail map[string]any) error {
	if detail == nil {
		detail = map[string]any{}
	}
	detail["scope"] = scope.String()
	if who, ok := grpcserver.PrincipalFromContext(ctx); ok {
		detail["admin"] = who.String()
	}
	if _, err := q.AppendEvent(ctx, inventory.Event{NodeID: scope.NodeID, Kind: kind, Service: "metadata", Detail: detail}); err != nil {
		return fmt.Errorf("record %s: %w", kind, err)
	}
	return nil
}
