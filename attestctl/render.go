package attestctl

import (
	"context"
	"strings"

	metadatav1 "github.com/attestboot/attestboot/proto/attestboot/metadata/v1"
)

func runRender(a *app, args []string) error {
	fs := a.flags("render", "render NODE")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	var res *metadatav1.RenderPreviewResponse
	err = a.meta("render "+pos[0], func(ctx context.Context, c metadatav1.MetadataServiceClient) (err error) {
		res, err = c.RenderPreview(ctx, &metadatav1.RenderPreviewRequest{NodeId: pos[0]})
		return err
	})
	if err != nil {
		return err
	}
	if a.cfg.JSON {
		return a.printProto(res)
	}
	title := "# " + pos[0] + " as the node receives it; secret values are shown as [REDACTED:name]"
	if len(res.GetSecrets()) > 0 {
		title += "\n# secrets used: " + strings.Join(res.GetSecrets(), ", ")
	}
	return a.printDocuments(title, [][2]string{{"meta-data", res.GetMetaData()}, {"user-data", res.GetUserData()},
		{"vendor-data", res.GetVendorData()}, {"network-config", res.GetNetworkConfig()}})
}
