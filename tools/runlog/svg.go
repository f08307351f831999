package runlog

import (
	"bytes"
	"fmt"
	"html"
	"math"
	"strings"
)

// The figure is 800 user units wide and declares itself 16 cm wide, so
// one unit prints as 0.2 mm and the 17-unit text as 9.6 pt.
const (
	svgWidth    = 800.0
	svgWidthCM  = 16.0
	fontSize    = 17.0
	titleSize   = 18.0
	charWidth   = 0.56 * fontSize // a generous average for Helvetica/Arial
	marginLeft  = 52.0
	marginRight = 18.0
	rowHeight   = 34.0
	barHeight   = 24.0
	laneHeight  = 21.0
	// baseline moves text down from a centre line to its baseline, so
	// that it looks centred without dominant-baseline (which not every
	// SVG renderer knows).
	baseline = 0.35 * fontSize
)

// Segment kinds, with their fill and the text drawn in a wide enough bar.
var kinds = map[string]struct{ fill, text, label string }{
	"head":    {"#0072B2", "#ffffff", "head"},
	"middle":  {"#56B4E9", "#000000", "middle"},
	"tail":    {"#009E73", "#ffffff", "tail"},
	"single":  {"#CC79A7", "#000000", "head+tail"},
	"joining": {"url(#joining)", "#000000", "joining"},
	"crashed": {"url(#crashed)", "#000000", "killed"},
}

// legendOrder lists the bar kinds in the legend.
var legendOrder = []struct{ kind, words string }{
	{"head", "head"}, {"middle", "middle"}, {"tail", "tail"}, {"single", "head and tail"},
	{"joining", "joining (catching up)"}, {"crashed", "killed, still in the configuration"},
}

const (
	killColour  = "#D55E00"
	epochColour = "#555555"
)

// DefaultTitle is the figure's title unless told otherwise.
const DefaultTitle = "The chain over time: its members and their roles, epochs and kills"

// segment is a stretch of time a node spent in one role.
type segment struct {
	from, to float64
	kind     string
}

// segments computes each node's bars: its role in each epoch, joining
// while it catches up, crashed from its kill until an epoch leaves it
// out (or the end of the log).
func (s Story) segments() map[string][]segment {
	out := map[string][]segment{}
	add := func(id string, seg segment) {
		if seg.to <= seg.from {
			return
		}
		list := out[id]
		if n := len(list); n > 0 && list[n-1].kind == seg.kind && math.Abs(list[n-1].to-seg.from) < 1e-9 {
			list[n-1].to = seg.to
		} else {
			list = append(list, seg)
		}
		out[id] = list
	}
	for i, e := range s.Epochs {
		end := s.End
		if i+1 < len(s.Epochs) {
			end = s.Epochs[i+1].At
		}
		for p, id := range e.Chain {
			kind := "middle"
			switch {
			case len(e.Chain) == 1:
				kind = "single"
			case p == 0:
				kind = "head"
			case p == len(e.Chain)-1:
				kind = "tail"
			}
			s.addLive(add, id, segment{e.At, end, kind})
		}
		for _, id := range e.Joining {
			s.addLive(add, id, segment{e.At, end, "joining"})
		}
	}
	return out
}

// addLive adds a segment, cut at the node's kill: after it the node is
// drawn as crashed, until an epoch leaves it out (a node of the same id
// that joins after that is a new process).
func (s Story) addLive(add func(string, segment), id string, seg segment) {
	for _, k := range s.Kills {
		if k.Node != id || k.At >= seg.to {
			continue
		}
		if e, ok := s.RemovedAfter(id, k.At); ok && e.At <= seg.from {
			continue
		}
		if k.At > seg.from {
			add(id, segment{seg.from, k.At, seg.kind})
		}
		add(id, segment{max(seg.from, k.At), seg.to, "crashed"})
		return
	}
	add(id, seg)
}

// label is a text placed in a band above the plot, centred on x.
type label struct {
	x      float64
	text   string
	colour string
	lane   int
}

// textWidth estimates the width of text at the figure's font size.
func textWidth(s string) float64 { return float64(len([]rune(s))) * charWidth }

// placeLanes moves each label inside the figure and gives it the first
// lane where it overlaps no other label; it returns the number of lanes.
func placeLanes(ls []label) int {
	var ends []float64 // right end of the last label in each lane
	for i := range ls {
		w := textWidth(ls[i].text)
		ls[i].x = min(max(ls[i].x, w/2+2), svgWidth-w/2-2) // inside the figure
		left := ls[i].x - w/2
		lane := 0
		for lane < len(ends) && ends[lane]+6 > left {
			lane++
		}
		if lane == len(ends) {
			ends = append(ends, 0)
		}
		ends[lane] = left + w
		ls[i].lane = lane
	}
	return max(len(ends), 1)
}

// niceStep returns a tick step for a time range of span seconds.
func niceStep(span float64) float64 {
	for _, step := range []float64{0.5, 1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600} {
		if span/step <= 10 {
			return step
		}
	}
	return 1200
}

// SVG draws the story: time across, one row per node, a bar for each
// stretch of time the node spent in one role (head, middle, tail, head
// and tail, joining, killed but not yet removed), a dashed line at each
// new epoch, labelled eN above the plot (epochs too close to label apart
// share one label, e1–e5), a solid line at each kill and at the first
// unavailable answer after the last kill. The figure is 16 cm wide; its
// text is at least 9 pt at that size.
func SVG(s Story, title string) []byte {
	plotW := svgWidth - marginLeft - marginRight
	span := math.Max(s.End, 1)
	x := func(t float64) float64 { return marginLeft + plotW*t/span }

	// The marker labels: kills and unavailable in one band, epochs in
	// the band below it.
	var kills []label
	for _, k := range s.Kills {
		kills = append(kills, label{x: x(k.At), text: "kill " + k.Node, colour: killColour})
	}
	var unavailableAt = -1.0
	if len(s.Kills) > 0 {
		last := s.Kills[len(s.Kills)-1]
		for _, u := range s.Unavailable {
			if u.At >= last.At {
				unavailableAt = u.At
				kills = append(kills, label{x: x(u.At), text: "unavailable", colour: killColour})
				break
			}
		}
	}
	var epochs []label
	for i := 0; i < len(s.Epochs); {
		j := i + 1
		for j < len(s.Epochs) && x(s.Epochs[j].At)-x(s.Epochs[i].At) < textWidth("e10")+4 {
			j++
		}
		text := fmt.Sprintf("e%d", s.Epochs[i].Epoch)
		if j-i > 1 {
			text = fmt.Sprintf("e%d–e%d", s.Epochs[i].Epoch, s.Epochs[j-1].Epoch)
		}
		epochs = append(epochs, label{x: (x(s.Epochs[i].At) + x(s.Epochs[j-1].At)) / 2, text: text, colour: epochColour})
		i = j
	}
	killLanes, epochLanes := placeLanes(kills), placeLanes(epochs)

	var b bytes.Buffer
	y := 26.0
	titleY := y
	y += 14
	killBand := y
	y += float64(killLanes) * laneHeight
	epochBand := y
	y += float64(epochLanes)*laneHeight + 4
	plotTop := y
	plotBottom := plotTop + float64(len(s.Nodes))*rowHeight
	axisY := plotBottom
	y = axisY + 22 + 24 // tick labels, axis title
	legendTop := y + 14

	// The legend flows left to right, wrapping at the right margin.
	type entry struct {
		swatch string // kind, or "epoch" / "kill"
		words  string
		x, y   float64
	}
	var legend []entry
	for _, l := range legendOrder {
		legend = append(legend, entry{swatch: l.kind, words: l.words})
	}
	legend = append(legend, entry{swatch: "epoch", words: "new epoch committed"}, entry{swatch: "kill", words: "SIGKILL"})
	lx, ly := marginLeft, legendTop
	for i := range legend {
		w := 30 + textWidth(legend[i].words) + 18
		if lx+w > svgWidth-marginRight && lx > marginLeft {
			lx, ly = marginLeft, ly+26
		}
		legend[i].x, legend[i].y = lx, ly
		lx += w
	}
	height := ly + 22

	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="%gcm" height="%.2fcm" viewBox="0 0 %g %.1f" font-family="Helvetica, Arial, sans-serif" font-size="%g">
`, svgWidthCM, height*svgWidthCM/svgWidth, svgWidth, height, fontSize)
	fmt.Fprintf(&b, "<title>%s</title>\n", html.EscapeString(title))
	b.WriteString(`<defs>
<pattern id="joining" patternUnits="userSpaceOnUse" width="8" height="8" patternTransform="rotate(45)"><rect width="8" height="8" fill="#FBE3B0"/><rect width="3" height="8" fill="#E69F00"/></pattern>
<pattern id="crashed" patternUnits="userSpaceOnUse" width="8" height="8" patternTransform="rotate(-45)"><rect width="8" height="8" fill="#EEEEEE"/><rect width="2" height="8" fill="#888888"/></pattern>
</defs>
<rect width="100%" height="100%" fill="#ffffff"/>
`)
	fmt.Fprintf(&b, "<text x=\"%g\" y=\"%g\" font-size=\"%g\" font-weight=\"bold\">%s</text>\n", marginLeft, titleY, titleSize, html.EscapeString(title))

	// Rows and their bars.
	segs := s.segments()
	for i, id := range s.Nodes {
		rowY := plotTop + float64(i)*rowHeight
		barY := rowY + (rowHeight-barHeight)/2
		fmt.Fprintf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#dddddd\"/>\n", marginLeft, barY+barHeight/2, x(span), barY+barHeight/2)
		fmt.Fprintf(&b, "<text x=\"%g\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", marginLeft-8, barY+barHeight/2+baseline, html.EscapeString(id))
		for _, sg := range segs[id] {
			k := kinds[sg.kind]
			w := x(sg.to) - x(sg.from)
			fmt.Fprintf(&b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%g\" fill=\"%s\" stroke=\"#333333\" stroke-width=\"0.6\"><title>%s %s %.3f–%.3f s</title></rect>\n",
				x(sg.from), barY, w, barHeight, k.fill, html.EscapeString(id), sg.kind, sg.from, sg.to)
			if w >= textWidth(k.label)+8 {
				fmt.Fprintf(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"%s\">%s</text>\n",
					x(sg.from)+w/2, barY+barHeight/2+baseline, k.text, k.label)
			}
		}
	}

	// Markers: epochs dashed, kills and the unavailable answer solid.
	for _, e := range s.Epochs {
		fmt.Fprintf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"1\" stroke-dasharray=\"4 3\"/>\n",
			x(e.At), epochBand, x(e.At), plotBottom, epochColour)
	}
	for _, k := range s.Kills {
		fmt.Fprintf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"/>\n",
			x(k.At), killBand, x(k.At), plotBottom, killColour)
	}
	if unavailableAt >= 0 {
		fmt.Fprintf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\" stroke-dasharray=\"2 3\"/>\n",
			x(unavailableAt), killBand, x(unavailableAt), plotBottom, killColour)
	}
	for _, band := range []struct {
		top float64
		ls  []label
	}{{killBand, kills}, {epochBand, epochs}} {
		for _, l := range band.ls {
			ly := band.top + float64(l.lane)*laneHeight + laneHeight - 5
			// A white backing keeps the text readable over the lines.
			w := textWidth(l.text)
			fmt.Fprintf(&b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%g\" fill=\"#ffffff\"/>\n", l.x-w/2, ly-fontSize+3, w, fontSize)
			fmt.Fprintf(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"%s\">%s</text>\n", l.x, ly, l.colour, html.EscapeString(l.text))
		}
	}

	// The time axis.
	fmt.Fprintf(&b, "<line x1=\"%g\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#000000\"/>\n", marginLeft, axisY, x(span), axisY)
	step := niceStep(span)
	for t := 0.0; t <= span+1e-9; t += step {
		fmt.Fprintf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#000000\"/>\n", x(t), axisY, x(t), axisY+5)
		fmt.Fprintf(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", x(t), axisY+22, trimFloat(t))
	}
	fmt.Fprintf(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">seconds from the start of the run</text>\n", marginLeft+plotW/2, axisY+46)

	// The legend.
	for _, e := range legend {
		switch e.swatch {
		case "epoch", "kill":
			colour, dash, width := epochColour, ` stroke-dasharray="4 3"`, 1
			if e.swatch == "kill" {
				colour, dash, width = killColour, "", 2
			}
			fmt.Fprintf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"%d\"%s/>\n",
				e.x+11, e.y-8, e.x+11, e.y+8, colour, width, dash)
		default:
			fmt.Fprintf(&b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"22\" height=\"16\" fill=\"%s\" stroke=\"#333333\" stroke-width=\"0.6\"/>\n",
				e.x, e.y-8, kinds[e.swatch].fill)
		}
		fmt.Fprintf(&b, "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n", e.x+30, e.y+baseline, html.EscapeString(e.words))
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// trimFloat formats a tick value without needless decimals.
func trimFloat(v float64) string {
	s := fmt.Sprintf("%.1f", v)
	return strings.TrimSuffix(s, ".0")
}
