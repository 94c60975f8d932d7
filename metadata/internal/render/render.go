package render

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/template"
	"text/template/parse"

	"go.yaml.in/yaml/v3"
)

// Kind is one of the four NoCloud documents.
type Kind string

// The documents, named as their URL paths.
const (
	MetaData      Kind = "meta-data"
	UserData      Kind = "user-data"
	VendorData    Kind = "vendor-data"
	NetworkConfig Kind = "network-config"
)

// Kinds lists every document.
var Kinds = []Kind{MetaData, UserData, VendorData, NetworkConfig}

// Header starts every cloud-config document.
const Header = "#cloud-config"

// jinjaHeader marks cloud-init's own templates, which are not Go templates.
const jinjaHeader = "## template: jinja"

// Facts are what templates know about the node.
type Facts struct {
	Node   Node
	Tunnel Tunnel
}

// Node facts.
type Node struct {
	ID       string
	Hostname string // never empty when rendering: the node id when the inventory has none
	MAC      string
	Groups   []string
}

// Tunnel facts.
type Tunnel struct {
	ID      string
	Address string // the node's tunnel address
}

// Layer is the data of one scope, lowest first in Input.Layers.
type Layer struct {
	Scope         string // "defaults", "group:NAME", "node:ID": named in errors
	MetaData      map[string]any
	UserData      string
	VendorData    string
	NetworkConfig string
}

func (l Layer) text(k Kind) string {
	switch k {
	case UserData:
		return l.UserData
	case VendorData:
		return l.VendorData
	case NetworkConfig:
		return l.NetworkConfig
	}
	return ""
}

// SecretFunc returns a secret's value for a node. Render calls it only for the names templates
// use. Its errors must not contain values.
type SecretFunc func(name string) (string, error)

// PhoneHome is the stanza added to vendor-data.
type PhoneHome struct {
	URL   string
	Tries int
}

// PhoneHomeFields are the fields cloud-init posts.
var PhoneHomeFields = []string{"pub_key_rsa", "pub_key_ecdsa", "pub_key_ed25519", "instance_id", "hostname", "fqdn"}

// Input is everything a node's documents are made of.
type Input struct {
	Layers     []Layer
	Facts      Facts
	InstanceID string
	PhoneHome  PhoneHome
	Secret     SecretFunc // nil: any secret use is an error
}

// ErrSecretUnavailable is what a SecretFunc wraps when a secret does not exist for the node.
var ErrSecretUnavailable = errors.New("secret unavailable")

// Redacted is the placeholder of a secret in previews.
func Redacted(name string) string { return "[REDACTED:" + name + "]" }

func isRedacted(s string) bool {
	return strings.HasPrefix(s, "[REDACTED:") && strings.HasSuffix(s, "]")
}

// Document renders one document for a node and returns it with the names of the secrets it
// holds (sorted). An empty result means there is nothing to serve.
func Document(k Kind, in Input) ([]byte, []string, error) {
	if k == MetaData {
		b, err := metaData(in)
		return b, nil, err
	}
	var used []string
	secret := func(name string) (string, error) {
		if k == NetworkConfig || in.Secret == nil {
			return "", fmt.Errorf("secret %q: secrets are not allowed in %s", name, k)
		}
		v, err := in.Secret(name)
		if err != nil {
			return "", err
		}
		if !slices.Contains(used, name) {
			used = append(used, name)
		}
		return v, nil
	}
	type rendered struct {
		scope, text string
	}
	var texts []rendered
	for _, l := range in.Layers {
		src := l.text(k)
		if strings.TrimSpace(src) == "" {
			continue
		}
		out, err := execute(l.Scope+"/"+string(k), src, in.Facts, secret)
		if err != nil {
			return nil, nil, err
		}
		texts = append(texts, rendered{l.Scope, out})
	}
	slices.Sort(used)
	// Errors below may come from parsing text that holds secret values: they name the scope only.
	parseErr := func(scope string, err error) error {
		if len(used) > 0 {
			return fmt.Errorf("%s of %s: rendered document is not valid YAML (details withheld: it holds secrets)", k, scope)
		}
		return fmt.Errorf("%s of %s: %w", k, scope, err)
	}

	var merged map[string]any
	switch k {
	case UserData:
		if n := len(texts); n > 0 && !isCloudConfig(texts[n-1].text) {
			return []byte(texts[n-1].text), used, nil
		}
		fallthrough
	case VendorData:
		for _, r := range texts {
			if !isCloudConfig(r.text) {
				continue
			}
			m, err := parseMap(r.text)
			if err != nil {
				return nil, nil, parseErr(r.scope, err)
			}
			merged = mergeMaps(merged, m)
		}
		if k == VendorData && in.PhoneHome.URL != "" {
			if merged == nil {
				merged = map[string]any{}
			}
			fields := make([]any, len(PhoneHomeFields))
			for i, f := range PhoneHomeFields {
				fields[i] = f
			}
			merged["phone_home"] = map[string]any{"url": in.PhoneHome.URL, "post": fields, "tries": max(in.PhoneHome.Tries, 1)}
		}
		if merged == nil {
			return nil, used, nil
		}
		b, err := marshal(merged)
		if err != nil {
			return nil, nil, err
		}
		return append([]byte(Header+"\n"), b...), used, nil
	case NetworkConfig:
		for _, r := range texts {
			m, err := parseMap(r.text)
			if err != nil {
				return nil, nil, parseErr(r.scope, err)
			}
			merged = mergeMaps(merged, m)
		}
		if merged == nil {
			return nil, nil, nil
		}
		b, err := marshal(merged)
		return b, nil, err
	}
	return nil, nil, fmt.Errorf("render: unknown document %q", k)
}

func metaData(in Input) ([]byte, error) {
	var merged map[string]any
	for _, l := range in.Layers {
		if len(l.MetaData) > 0 {
			// Copied through JSON so that merging never aliases a layer's maps.
			c, err := deepCopy(l.MetaData)
			if err != nil {
				return nil, fmt.Errorf("meta-data of %s: %w", l.Scope, err)
			}
			merged = mergeMaps(merged, c)
		}
	}
	if merged == nil {
		merged = map[string]any{}
	}
	merged["instance-id"] = in.InstanceID
	merged["local-hostname"] = in.Facts.Node.Hostname
	merged["hostname"] = in.Facts.Node.Hostname
	return marshal(merged)
}

func deepCopy(m map[string]any) (map[string]any, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	return out, json.Unmarshal(b, &out)
}

func isCloudConfig(text string) bool {
	first, _, _ := strings.Cut(text, "\n")
	return strings.TrimRight(first, " \t\r") == Header
}

func isJinja(text string) bool {
	first, _, _ := strings.Cut(text, "\n")
	return strings.TrimRight(first, " \t\r") == jinjaHeader
}

// funcs are the template functions; secret is bound per call.
func funcs(secret SecretFunc) template.FuncMap {
	return template.FuncMap{
		"secret": secret,
		// base64 leaves preview placeholders readable, quoted so that YAML keeps them a string.
		"base64": func(s string) string {
			if isRedacted(s) {
				b, _ := json.Marshal(s)
				return string(b)
			}
			return base64.StdEncoding.EncodeToString([]byte(s))
		},
		"quote": func(s string) string {
			b, _ := json.Marshal(s) // a JSON string is a valid YAML double-quoted scalar
			return string(b)
		},
		"join": strings.Join,
		"indent": func(n int, s string) string {
			pad := strings.Repeat(" ", n)
			return pad + strings.ReplaceAll(s, "\n", "\n"+pad)
		},
	}
}

func parseTemplate(name, src string) (*template.Template, error) {
	return template.New(name).Option("missingkey=error").Funcs(funcs(nil)).Parse(src)
}

func execute(name, src string, facts Facts, secret SecretFunc) (string, error) {
	if isJinja(src) {
		return src, nil
	}
	t, err := parseTemplate(name, src)
	if err != nil {
		return "", fmt.Errorf("template %s: %w", name, err)
	}
	t.Funcs(template.FuncMap{"secret": secret})
	var b strings.Builder
	if err := t.Execute(&b, facts); err != nil {
		return "", fmt.Errorf("template %s: %w", name, err)
	}
	return b.String(), nil
}

func parseMap(text string) (map[string]any, error) {
	var v any
	if err := yaml.Unmarshal([]byte(text), &v); err != nil {
		return nil, err
	}
	if v == nil {
		return map[string]any{}, nil
	}
	m, ok := normalize(v).(map[string]any)
	if !ok {
		return nil, errors.New("not a YAML mapping")
	}
	return m, nil
}

// normalize turns YAML mappings with non-string keys into map[string]any, so every mapping
// merges the same way.
func normalize(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			t[k] = normalize(x)
		}
		return t
	case map[any]any:
		m := make(map[string]any, len(t))
		for k, x := range t {
			m[fmt.Sprint(k)] = normalize(x)
		}
		return m
	case []any:
		for i, x := range t {
			t[i] = normalize(x)
		}
		return t
	}
	return v
}

// mergeMaps merges src into dst by the package's rule and returns dst (src when dst is nil).
func mergeMaps(dst, src map[string]any) map[string]any {
	if dst == nil {
		return src
	}
	for k, v := range src {
		if d, ok := dst[k]; ok {
			dst[k] = merge(d, v)
		} else {
			dst[k] = v
		}
	}
	return dst
}

func merge(dst, src any) any {
	if dm, ok := dst.(map[string]any); ok {
		if sm, ok := src.(map[string]any); ok {
			return mergeMaps(dm, sm)
		}
	}
	if dl, ok := dst.([]any); ok {
		if sl, ok := src.([]any); ok {
			return append(dl, sl...)
		}
	}
	return src
}

func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("render: encode YAML: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("render: encode YAML: %w", err)
	}
	return b.Bytes(), nil
}

// Check validates one scope's document as an operator writes it: the template parses, secret
// names are literals, the format fits the document (vendor-data "#cloud-config", network-config
// a YAML mapping, cloud-config user-data valid YAML once rendered with sample facts and
// placeholder secrets). It returns the secret names the document uses, sorted.
func Check(k Kind, src string) ([]string, error) {
	if strings.TrimSpace(src) == "" {
		return nil, nil
	}
	var names []string
	if !isJinja(src) {
		t, err := parseTemplate(string(k), src)
		if err != nil {
			return nil, err
		}
		names, err = secretNames(t)
		if err != nil {
			return nil, err
		}
	}
	if len(names) > 0 && k == NetworkConfig {
		return nil, fmt.Errorf("%s may not use secrets", k)
	}
	sample := Facts{
		Node:   Node{ID: "x0c0s0b0n0", Hostname: "x0c0s0b0n0", MAC: "02:00:00:00:00:01", Groups: []string{"compute"}},
		Tunnel: Tunnel{ID: "00000000-0000-0000-0000-000000000000", Address: "100.64.0.2"},
	}
	out, err := execute(string(k), src, sample, func(name string) (string, error) { return Redacted(name), nil })
	if err != nil {
		return nil, err
	}
	switch k {
	case VendorData:
		if !isCloudConfig(out) {
			return nil, fmt.Errorf("%s must start with %q", k, Header)
		}
	case UserData:
		if !isCloudConfig(out) {
			if !strings.HasPrefix(out, "#") && !strings.HasPrefix(strings.ToLower(out), "content-type:") {
				return nil, fmt.Errorf("%s must start with %q or another cloud-init format marker (#!, #include, ## template: jinja, Content-Type:)", k, Header)
			}
			return names, nil
		}
	}
	if _, err := parseMap(out); err != nil {
		return nil, fmt.Errorf("%s is not valid YAML: %w", k, err)
	}
	return names, nil
}

// secretNames lists the names passed to secret in t, refusing anything but a string literal.
func secretNames(t *template.Template) ([]string, error) {
	var names []string
	var walk func(n parse.Node) error
	walkPipe := func(p *parse.PipeNode) error {
		if p == nil {
			return nil
		}
		for _, c := range p.Cmds {
			if err := walk(c); err != nil {
				return err
			}
		}
		return nil
	}
	walk = func(n parse.Node) error {
		switch n := n.(type) {
		case *parse.ListNode:
			if n == nil {
				return nil
			}
			for _, c := range n.Nodes {
				if err := walk(c); err != nil {
					return err
				}
			}
		case *parse.ActionNode:
			return walkPipe(n.Pipe)
		case *parse.PipeNode:
			return walkPipe(n)
		case *parse.CommandNode:
			for i, a := range n.Args {
				if id, ok := a.(*parse.IdentifierNode); ok && id.Ident == "secret" {
					if i != 0 || len(n.Args) != 2 {
						return errors.New(`secret takes one argument: {{ secret "name" }}`)
					}
					s, ok := n.Args[1].(*parse.StringNode)
					if !ok {
						return errors.New(`secret names must be string literals: {{ secret "name" }}`)
					}
					if !slices.Contains(names, s.Text) {
						names = append(names, s.Text)
					}
					continue
				}
				if err := walk(a); err != nil {
					return err
				}
			}
		case *parse.IfNode:
			return walkBranch(&n.BranchNode, walk, walkPipe)
		case *parse.RangeNode:
			return walkBranch(&n.BranchNode, walk, walkPipe)
		case *parse.WithNode:
			return walkBranch(&n.BranchNode, walk, walkPipe)
		case *parse.TemplateNode:
			return walkPipe(n.Pipe)
		}
		return nil
	}
	for _, tt := range t.Templates() {
		if tt.Tree == nil {
			continue
		}
		if err := walk(tt.Tree.Root); err != nil {
			return nil, err
		}
	}
	slices.Sort(names)
	return names, nil
}

func walkBranch(b *parse.BranchNode, walk func(parse.Node) error, walkPipe func(*parse.PipeNode) error) error {
	if err := walkPipe(b.Pipe); err != nil {
		return err
	}
	if b.List != nil {
		if err := walk(b.List); err != nil {
			return err
		}
	}
	if b.ElseList != nil {
		return walk(b.ElseList)
	}
	return nil
}
