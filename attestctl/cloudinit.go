package attestctl

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	metadatav1 "github.com/attestboot/attestboot/proto/attestboot/metadata/v1"
)

// maxDocument bounds what is read from a file; the service enforces its own, smaller limits.
const maxDocument = 1 << 20

func runCloudInit(a *app, args []string) error {
	return a.sub("cloud-init", args, map[string]func([]string) error{
		"get":    a.cloudInitGet,
		"set":    a.cloudInitSet,
		"delete": a.cloudInitDelete,
	})
}

func (a *app) getCloudInit(scope *metadatav1.Scope) (*metadatav1.CloudInitData, error) {
	var res *metadatav1.GetCloudInitDataResponse
	err := a.meta("get cloud-init data of "+scopeString(scope), func(ctx context.Context, c metadatav1.MetadataServiceClient) (err error) {
		res, err = c.GetCloudInitData(ctx, &metadatav1.GetCloudInitDataRequest{Scope: scope})
		return err
	})
	return res.GetData(), err
}

func (a *app) cloudInitGet(args []string) error {
	fs := a.flags("cloud-init get", "cloud-init get SCOPE")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	scope, err := parseScope(pos[0])
	if err != nil {
		return err
	}
	d, err := a.getCloudInit(scope)
	if err != nil {
		return err
	}
	if a.cfg.JSON {
		return a.printProto(d)
	}
	meta := ""
	if len(d.GetMetaData().GetFields()) > 0 {
		b, err := yaml.Marshal(d.GetMetaData().AsMap())
		if err != nil {
			return fmt.Errorf("encode meta-data: %w", err)
		}
		meta = string(b)
	}
	return a.printDocuments(fmt.Sprintf("# %s, updated %s", scopeString(d.GetScope()), fmtTime(d.GetUpdateTime())),
		[][2]string{{"meta-data", meta}, {"user-data", d.GetUserData()}, {"vendor-data", d.GetVendorData()}, {"network-config", d.GetNetworkConfig()}})
}

// printDocuments prints named documents one after another, each under a header line.
func (a *app) printDocuments(title string, docs [][2]string) error {
	w := a.env.Stdout
	if title != "" {
		fmt.Fprintln(w, title)
	}
	for _, d := range docs {
		if d[1] == "" {
			fmt.Fprintf(w, "--- %s: (empty)\n", d[0])
			continue
		}
		fmt.Fprintf(w, "--- %s:\n%s", d[0], d[1])
		if d[1][len(d[1])-1] != '\n' {
			fmt.Fprintln(w)
		}
	}
	return nil
}

func readDocument(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxDocument+1))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > maxDocument {
		return "", fmt.Errorf("%s is larger than %d bytes", path, maxDocument)
	}
	return string(b), nil
}

// metaDataFromYAML turns a YAML mapping into the Struct the API carries.
func metaDataFromYAML(doc string) (*structpb.Struct, error) {
	var m map[string]any
	if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
		return nil, fmt.Errorf("meta-data is not a YAML mapping: %w", err)
	}
	norm, err := jsonCompatible(m)
	if err != nil {
		return nil, fmt.Errorf("meta-data: %w", err)
	}
	mm, _ := norm.(map[string]any)
	s, err := structpb.NewStruct(mm)
	if err != nil {
		return nil, fmt.Errorf("meta-data: %w", err)
	}
	return s, nil
}

// jsonCompatible converts what YAML decodes into what structpb accepts: mappings with
// non-string keys become string-keyed, timestamps become RFC 3339 strings.
func jsonCompatible(v any) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			c, err := jsonCompatible(e)
			if err != nil {
				return nil, err
			}
			out[k] = c
		}
		return out, nil
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			c, err := jsonCompatible(e)
			if err != nil {
				return nil, err
			}
			out[fmt.Sprint(k)] = c
		}
		return out, nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			c, err := jsonCompatible(e)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	case time.Time:
		return x.Format(time.RFC3339Nano), nil
	case nil, bool, string, int, int64, uint64, float64:
		return x, nil
	}
	return nil, fmt.Errorf("unsupported YAML value %T", v)
}

func (a *app) cloudInitSet(args []string) error {
	fs := a.flags("cloud-init set", "cloud-init set SCOPE [--user-data F] [--vendor-data F] [--network-config F] [--meta-data F] [--replace]")
	userData := fs.String("user-data", "", "user-data `file` (#cloud-config YAML, may use templates and secrets)")
	vendorData := fs.String("vendor-data", "", "vendor-data `file`")
	networkConfig := fs.String("network-config", "", "network-config `file` (version 2 YAML)")
	metaData := fs.String("meta-data", "", "extra meta-data keys, a YAML mapping `file` (never secrets: nodes make it world-readable)")
	replace := fs.Bool("replace", false, "clear the documents not given (default: keep them)")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	scope, err := parseScope(pos[0])
	if err != nil {
		return err
	}
	if *userData == "" && *vendorData == "" && *networkConfig == "" && *metaData == "" {
		return usagef("cloud-init set: give at least one of --user-data, --vendor-data, --network-config, --meta-data")
	}
	data := &metadatav1.CloudInitData{Scope: scope}
	if !*replace {
		cur, err := a.getCloudInit(scope)
		switch {
		case status.Code(err) == codes.NotFound:
		case err != nil:
			return err
		default:
			data = cur
			data.Scope, data.UpdateTime = scope, nil
		}
	}
	for _, f := range []struct {
		path string
		dst  *string
	}{{*userData, &data.UserData}, {*vendorData, &data.VendorData}, {*networkConfig, &data.NetworkConfig}} {
		if f.path == "" {
			continue
		}
		doc, err := readDocument(f.path)
		if err != nil {
			return &exitError{code: ExitError, err: fmt.Errorf("cloud-init set: %w", err)}
		}
		*f.dst = doc
	}
	if *metaData != "" {
		doc, err := readDocument(*metaData)
		if err != nil {
			return &exitError{code: ExitError, err: fmt.Errorf("cloud-init set: %w", err)}
		}
		if data.MetaData, err = metaDataFromYAML(doc); err != nil {
			return &exitError{code: ExitError, err: fmt.Errorf("cloud-init set: %s: %w", *metaData, err)}
		}
	}
	var res *metadatav1.SetCloudInitDataResponse
	err = a.meta("set cloud-init data of "+pos[0], func(ctx context.Context, c metadatav1.MetadataServiceClient) (err error) {
		res, err = c.SetCloudInitData(ctx, &metadatav1.SetCloudInitDataRequest{Data: data})
		return err
	})
	if err != nil {
		return err
	}
	if a.cfg.JSON {
		return a.printProto(res.GetData())
	}
	_, err = fmt.Fprintf(a.env.Stdout, "stored cloud-init data of %s; see a node's result with `attestctl render NODE`\n", scopeString(res.GetData().GetScope()))
	return err
}

func (a *app) cloudInitDelete(args []string) error {
	fs := a.flags("cloud-init delete", "cloud-init delete SCOPE")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	scope, err := parseScope(pos[0])
	if err != nil {
		return err
	}
	err = a.meta("delete cloud-init data of "+pos[0], func(ctx context.Context, c metadatav1.MetadataServiceClient) error {
		_, err := c.DeleteCloudInitData(ctx, &metadatav1.DeleteCloudInitDataRequest{Scope: scope})
		return err
	})
	if err != nil {
		return err
	}
	return a.done(map[string]any{"deleted": pos[0]}, "deleted the cloud-init data of %s", pos[0])
}
