package main

import (
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// setProcessGroup puts the command in a process group of its own, so that
// stint exec can signal it and everything it starts. On a terminal where
// stint exec is in the foreground, the command's group becomes the
// foreground group (the terminal's Ctrl-C and Ctrl-\ reach it directly,
// and it may read the terminal); the returned function gives the terminal
// back to stint exec's group once the command is done.
func setProcessGroup(cmd *exec.Cmd) (restore func()) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	fd := int(os.Stdin.Fd())
	fg, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	if err != nil || fg != syscall.Getpgrp() {
		return func() {}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Foreground: true, Ctty: fd}
	return func() {
		// A background group that sets the foreground group gets SIGTTOU.
		signal.Ignore(syscall.SIGTTOU)
		defer signal.Reset(syscall.SIGTTOU)
		unix.IoctlSetPointerInt(fd, unix.TIOCSPGRP, syscall.Getpgrp())
	}
}
