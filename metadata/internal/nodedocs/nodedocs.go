// Package nodedocs gathers what one node's cloud-init documents are made of from the
// inventory (its facts, the data of its scopes, its secrets) and renders them, either for
// delivery over the node's tunnel (secrets decrypted) or for an admin preview (secrets
// redacted). The datasource and the admin API share it so that a preview shows exactly what the
// node would get.
package nodedocs

import (
	"context"
	"fmt"
	"slices"

	"github.com/attestboot/attestboot/metadata/internal/render"
	"github.com/attestboot/attestboot/metadata/internal/seal"
	"github.com/attestboot/attestboot/services/inventory"
)

// Builder renders node documents from the inventory.
type Builder struct {
	store     *inventory.Store
	keys      *seal.Keyring
	phoneHome render.PhoneHome
}

// New returns a builder. keys may be nil for a service without secrets: any template using one
// then fails to render.
func New(store *inventory.Store, keys *seal.Keyring, phoneHome render.PhoneHome) *Builder {
	return &Builder{store: store, keys: keys, phoneHome: phoneHome}
}

// Mode says what happens to secret values.
type Mode int

// Modes.
const (
	Deliver Mode = iota // decrypt values for the node
	Preview             // replace values by render.Redacted placeholders
)

// Result is one rendered document.
type Result struct {
	Body []byte
	// Secrets named in the document (sorted); Withheld those of them rendered empty because
	// they are served only until phone-home and the node has phoned home.
	Secrets  []string
	Withheld []string
}

// Render renders document k of node n, reached through tunnel t (t may be the zero Tunnel for
// a preview of a node without an open tunnel), reading the node's data from the inventory.
func (b *Builder) Render(ctx context.Context, k render.Kind, n inventory.Node, t inventory.Tunnel, mode Mode) (Result, error) {
	src := inventory.NodeDocsSource{Tunnel: t, Node: n}
	var err error
	if src.Layers, err = b.store.CloudInitLayers(ctx, n.ID); err != nil {
		return Result{}, err
	}
	if src.Groups, err = b.store.GroupsOfNode(ctx, n.ID); err != nil {
		return Result{}, err
	}
	if src.Secrets, err = b.store.SecretsOfNode(ctx, n.ID); err != nil {
		return Result{}, err
	}
	return b.RenderSource(k, src, mode)
}

// RenderSource renders document k from what src holds, with no inventory access: the datasource
// reads src in one round trip (inventory.Store.NodeDocsSourceByAddress) and may render it
// several times.
func (b *Builder) RenderSource(k render.Kind, src inventory.NodeDocsSource, mode Mode) (Result, error) {
	n, t := src.Node, src.Tunnel
	in := render.Input{
		InstanceID: t.ID,
		PhoneHome:  b.phoneHome,
		Facts: render.Facts{
			Node:   render.Node{ID: n.ID, Hostname: n.Hostname, MAC: n.MAC.String()},
			Tunnel: render.Tunnel{ID: t.ID},
		},
	}
	if in.Facts.Node.Hostname == "" {
		in.Facts.Node.Hostname = n.ID
	}
	if t.AddressV4.IsValid() {
		in.Facts.Tunnel.Address = t.AddressV4.String()
	} else if t.AddressV6.IsValid() {
		in.Facts.Tunnel.Address = t.AddressV6.String()
	}
	for _, l := range src.Layers {
		in.Layers = append(in.Layers, render.Layer{
			Scope: l.Scope.String(), MetaData: l.MetaData,
			UserData: l.UserData, VendorData: l.VendorData, NetworkConfig: l.NetworkConfig,
		})
	}
	in.Facts.Node.Groups = make([]string, 0, len(src.Groups))
	for _, g := range src.Groups {
		in.Facts.Node.Groups = append(in.Facts.Node.Groups, g.Name)
	}

	var withheld []string
	in.Secret = func(name string) (string, error) {
		i := slices.IndexFunc(src.Secrets, func(s inventory.Secret) bool { return s.Name == name })
		if i < 0 {
			return "", fmt.Errorf("secret %q for node %q: %w", name, n.ID, render.ErrSecretUnavailable)
		}
		s := src.Secrets[i]
		if mode == Preview {
			return render.Redacted(name), nil
		}
		if s.UntilPhoneHome && !t.PhonedHomeAt.IsZero() {
			if !slices.Contains(withheld, name) {
				withheld = append(withheld, name)
			}
			return "", nil
		}
		if b.keys == nil {
			return "", fmt.Errorf("secret %q: no key-encryption key configured: %w", name, seal.ErrOpen)
		}
		v, err := b.keys.Open(s.KeyID, s.Scope.String(), s.Name, s.Ciphertext, s.Nonce)
		if err != nil {
			return "", err
		}
		return string(v), nil
	}
	body, used, err := render.Document(k, in)
	if err != nil {
		return Result{}, fmt.Errorf("render %s of node %q: %w", k, n.ID, err)
	}
	slices.Sort(withheld)
	return Result{Body: body, Secrets: used, Withheld: withheld}, nil
}
