package vault

import "syscall"

// sysProcAttr asks Linux to stop the Vault server when the process that
// started it dies, so an aborted test run leaves no server behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
