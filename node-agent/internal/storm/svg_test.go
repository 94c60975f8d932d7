package storm

import (
	"bytes"
	"encoding/xml"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// svgDoc is the part of the chart the test reads back.
type svgDoc struct {
	XMLName xml.Name `xml:"svg"`
	Texts   []string `xml:"text"`
	Groups  []struct {
		ID        string   `xml:"id,attr"`
		Texts     []string `xml:"text"`
		Polylines []struct {
			Series string `xml:"data-series,attr"`
			Count  int    `xml:"data-count,attr"`
			Stroke string `xml:"stroke,attr"`
			Points string `xml:"points,attr"`
		} `xml:"polyline"`
	} `xml:"g"`
}

func TestSVGChartDrawsEverySeries(t *testing.T) {
	t.Parallel()
	c := Chart{
		Title:    "storm <100 nodes> & more",
		Subtitle: "test",
		Nodes:    4,
		Series: []Series{
			{Label: "attest done", Times: []float64{0.5, 1, 1.5, 2}},
			{Label: "booted", Times: []float64{1.2, 3.7}},
			{Label: "empty"},
		},
	}
	var buf bytes.Buffer
	require.NoError(t, WriteSVG(&buf, c))
	var doc svgDoc
	require.NoError(t, xml.Unmarshal(buf.Bytes(), &doc), "the chart is well-formed XML")
	require.Contains(t, doc.Texts, "storm <100 nodes> & more", "the title is escaped and reads back")
	require.Contains(t, doc.Texts, "seconds from the start of the storm")
	require.Contains(t, doc.Texts, "nodes completed")

	groups := map[string]int{}
	for i, g := range doc.Groups {
		groups[g.ID] = i
	}
	require.Subset(t, keys(groups), []string{"grid", "axes", "ticks", "series", "legend"})
	ticks := doc.Groups[groups["ticks"]].Texts
	require.Contains(t, ticks, "4.0", "the x axis reaches past the last completion (3.7 s)")
	require.Equal(t, []string{"0", "1", "2", "3", "4"}, ticks[len(ticks)-5:], "the y axis counts whole nodes, no fractions")
	require.Equal(t, []string{"attest done (4)", "booted (2)", "empty (0)"}, doc.Groups[groups["legend"]].Texts)

	lines := doc.Groups[groups["series"]].Polylines
	require.Len(t, lines, len(c.Series))
	strokes := map[string]bool{}
	for i, l := range lines {
		s := c.Series[i]
		require.Equal(t, s.Label, l.Series)
		require.Equal(t, len(s.Times), l.Count)
		strokes[l.Stroke] = true
		pts := parsePoints(t, l.Points)
		require.Len(t, pts, 1+2*len(s.Times), "a start point, then two per step")
		require.Equal(t, [2]float64{plotLeft, plotBottom}, pts[0], "every line starts at 0 nodes at time 0")
		for k := 1; k < len(pts); k++ {
			require.GreaterOrEqual(t, pts[k][0], pts[k-1][0], "time never goes back")
			require.LessOrEqual(t, pts[k][1], pts[k-1][1], "the count never falls (SVG y grows downwards)")
			require.GreaterOrEqual(t, pts[k][0], float64(plotLeft))
			require.LessOrEqual(t, pts[k][0], float64(plotRight))
			require.GreaterOrEqual(t, pts[k][1], float64(plotTop))
		}
		// The last step reaches the series' count, on the y axis' scale (0..4 nodes).
		last := pts[len(pts)-1]
		wantY := plotBottom - float64(len(s.Times))/4*(plotBottom-plotTop)
		require.InDelta(t, wantY, last[1], 0.01)
	}
	require.Len(t, strokes, len(c.Series), "each series has its own colour")
}

func TestNiceSteps(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		span float64
		n    int
		want float64
	}{{3.7, 10, 0.5}, {100, 8, 20}, {1000, 8, 200}, {17, 10, 2}, {0, 10, 1}, {0.03, 10, 0.005}} {
		require.InDelta(t, tc.want, niceStep(tc.span, tc.n), 1e-12, "span %v", tc.span)
	}
	require.Equal(t, "0.5", tickLabel(0.5, 0.5))
	require.Equal(t, "200", tickLabel(200, 200))
	var got []float64
	for v := range ticks(1, 0.1) {
		got = append(got, v)
	}
	require.Len(t, got, 11, "0 to 1 by 0.1 ends at 1, without accumulated rounding")
}

func parsePoints(t *testing.T, s string) [][2]float64 {
	t.Helper()
	var out [][2]float64
	for _, p := range strings.Fields(s) {
		x, y, ok := strings.Cut(p, ",")
		require.True(t, ok, p)
		fx, err := strconv.ParseFloat(x, 64)
		require.NoError(t, err)
		fy, err := strconv.ParseFloat(y, 64)
		require.NoError(t, err)
		out = append(out, [2]float64{fx, fy})
	}
	return out
}

func keys(m map[string]int) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
