// Command chainplot draws the chain over time from a merged run log (the
// docs/logs/failover.log that scripts/demo-failures writes): one row per
// node with a bar for each stretch of time it spent as head, middle,
// tail, head and tail, joining, or killed but still in the
// configuration; a dashed line at each new epoch the master leader
// committed, a solid one at each SIGKILL. The SVG has no external
// dependency and is 16 cm wide, its text at least 9 pt at that size.
//
//	go run ./tools/chainplot [--log docs/logs/failover.log] [--out docs/figures/chain-over-time.svg] [--title TEXT]
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/gavel-auction/gavel/tools/runlog"
)

func main() {
	logPath := flag.String("log", "docs/logs/failover.log", "the merged run log to read")
	out := flag.String("out", "docs/figures/chain-over-time.svg", "the SVG to write (- for stdout)")
	title := flag.String("title", runlog.DefaultTitle, "the figure's title")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "chainplot: unexpected argument %q\n", flag.Arg(0))
		os.Exit(2)
	}
	if err := run(*logPath, *out, *title); err != nil {
		fmt.Fprintln(os.Stderr, "chainplot:", err)
		os.Exit(1)
	}
}

func run(logPath, out, title string) error {
	f, err := os.Open(logPath)
	if err != nil {
		return err
	}
	recs, err := runlog.Read(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", logPath, err)
	}
	story, err := runlog.StoryOf(recs)
	if err != nil {
		return fmt.Errorf("%s: %w", logPath, err)
	}
	if len(story.Epochs) == 0 {
		return fmt.Errorf("%s: no \"new epoch committed\" line: nothing to draw", logPath)
	}
	svg := runlog.SVG(story, title)
	if out == "-" {
		_, err = os.Stdout.Write(svg)
		return err
	}
	return os.WriteFile(out, svg, 0o644)
}
