package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/term"
)

// progressLine shows the progress of long work on w: rewritten in place on
// a terminal; elsewhere (a log, a pipe) a line when it changes, at most
// every few seconds, so that scripts get a readable record.
type progressLine struct {
	w     io.Writer
	tty   bool
	last  string
	shown time.Time
	width int
}

func newProgressLine(w io.Writer) *progressLine {
	f, ok := w.(*os.File)
	return &progressLine{w: w, tty: ok && term.IsTerminal(int(f.Fd()))}
}

// show displays line, if it says something new.
func (p *progressLine) show(line string) {
	if line == p.last {
		return
	}
	if p.tty {
		pad := max(p.width-len(line), 0)
		fmt.Fprintf(p.w, "\r%s%*s", line, pad, "")
		p.width = len(line)
		p.last = line
		return
	}
	if time.Since(p.shown) < 2*time.Second && p.last != "" {
		return
	}
	fmt.Fprintln(p.w, line)
	p.last, p.shown = line, time.Now()
}

// done ends the line on a terminal.
func (p *progressLine) done() {
	if p.tty && p.width > 0 {
		fmt.Fprintln(p.w)
		p.width = 0
	}
}
