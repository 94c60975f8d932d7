package storm

import (
	"bufio"
	"encoding/xml"
	"fmt"
	"io"
	"iter"
	"math"
	"strings"
)

// The chart's geometry, in SVG user units.
const (
	svgWidth, svgHeight = 900, 520
	plotLeft, plotTop   = 80, 66
	plotRight           = 700 // the legend goes to the right of it
	plotBottom          = 450
)

var seriesColors = []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"}

// Chart is what the SVG shows.
type Chart struct {
	Title    string
	Subtitle string
	// Nodes sets the y axis; the lines are cumulative node counts.
	Nodes  int
	Series []Series
}

// WriteSVG draws the chart: nodes completed over time, one cumulative step line per series,
// with axes, ticks, labels and a legend. Plain SVG, no script and no external reference.
func WriteSVG(w io.Writer, c Chart) error {
	xMax := 0.0
	for _, s := range c.Series {
		if n := len(s.Times); n > 0 {
			xMax = max(xMax, s.Times[n-1])
		}
	}
	xStep := niceStep(xMax, 10)
	xMax = math.Max(xStep, math.Ceil(xMax/xStep)*xStep)
	yStep := max(1, niceStep(float64(c.Nodes), 8)) // whole nodes
	yMax := math.Max(yStep, math.Ceil(float64(c.Nodes)/yStep)*yStep)
	px := func(t float64) float64 { return plotLeft + t/xMax*(plotRight-plotLeft) }
	py := func(n float64) float64 { return plotBottom - n/yMax*(plotBottom-plotTop) }

	b := bufio.NewWriter(w)
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		svgWidth, svgHeight, svgWidth, svgHeight)
	fmt.Fprintf(b, `<rect width="%d" height="%d" fill="white"/>`+"\n", svgWidth, svgHeight)
	fmt.Fprintf(b, `<text x="%d" y="24" font-size="16" font-weight="bold">%s</text>`+"\n", plotLeft, esc(c.Title))
	fmt.Fprintf(b, `<text x="%d" y="42" fill="#555">%s</text>`+"\n", plotLeft, esc(c.Subtitle))

	// Grid and ticks.
	b.WriteString(`<g id="grid" stroke="#ddd" stroke-width="1">` + "\n")
	for t := range ticks(xMax, xStep) {
		fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d"/>`+"\n", px(t), plotTop, px(t), plotBottom)
	}
	for n := range ticks(yMax, yStep) {
		fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f"/>`+"\n", plotLeft, py(n), plotRight, py(n))
	}
	b.WriteString("</g>\n")
	b.WriteString(`<g id="axes" stroke="black" stroke-width="1.5">` + "\n")
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d"/>`+"\n", plotLeft, plotBottom, plotRight, plotBottom)
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d"/>`+"\n", plotLeft, plotTop, plotLeft, plotBottom)
	b.WriteString("</g>\n")
	b.WriteString(`<g id="ticks">` + "\n")
	for t := range ticks(xMax, xStep) {
		fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", px(t), plotBottom+18, tickLabel(t, xStep))
	}
	for n := range ticks(yMax, yStep) {
		fmt.Fprintf(b, `<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", plotLeft-8, py(n), tickLabel(n, yStep))
	}
	b.WriteString("</g>\n")
	fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="middle">seconds from the start of the storm</text>`+"\n", (plotLeft+plotRight)/2, plotBottom+44)
	fmt.Fprintf(b, `<text transform="translate(22 %d) rotate(-90)" text-anchor="middle">nodes completed</text>`+"\n", (plotTop+plotBottom)/2)

	// One step line per series: the count rises by one at each completion time.
	b.WriteString(`<g id="series" fill="none" stroke-width="2">` + "\n")
	for i, s := range c.Series {
		var pts strings.Builder
		fmt.Fprintf(&pts, "%.2f,%.2f", px(0), py(0))
		for k, t := range s.Times {
			fmt.Fprintf(&pts, " %.2f,%.2f %.2f,%.2f", px(t), py(float64(k)), px(t), py(float64(k+1)))
		}
		fmt.Fprintf(b, `<polyline data-series="%s" data-count="%d" stroke="%s" points="%s"/>`+"\n",
			esc(s.Label), len(s.Times), seriesColors[i%len(seriesColors)], pts.String())
	}
	b.WriteString("</g>\n")

	b.WriteString(`<g id="legend">` + "\n")
	for i, s := range c.Series {
		y := plotTop + 10 + i*24
		fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/>`+"\n",
			plotRight+20, y, plotRight+44, y, seriesColors[i%len(seriesColors)])
		fmt.Fprintf(b, `<text x="%d" y="%d" dominant-baseline="middle">%s (%d)</text>`+"\n", plotRight+52, y, esc(s.Label), len(s.Times))
	}
	b.WriteString("</g>\n</svg>\n")
	return b.Flush()
}

// ticks yields 0, step, 2·step, ... up to hi, computed by multiplication so that no rounding
// error accumulates.
func ticks(hi, step float64) iter.Seq[float64] {
	return func(yield func(float64) bool) {
		for k := 0; float64(k)*step <= hi+step/2; k++ {
			if !yield(float64(k) * step) {
				return
			}
		}
	}
}

// niceStep is a tick step of 1, 2 or 5 times a power of ten giving at most about n ticks.
func niceStep(span float64, n int) float64 {
	if span <= 0 {
		return 1
	}
	raw := span / float64(n)
	pow := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*pow >= raw {
			return m * pow
		}
	}
	return 10 * pow
}

// tickLabel prints v with as many decimals as the step needs.
func tickLabel(v, step float64) string {
	decimals := 0
	if step < 1 {
		decimals = int(math.Ceil(-math.Log10(step)))
	}
	return fmt.Sprintf("%.*f", decimals, v)
}

func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}
