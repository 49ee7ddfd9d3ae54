package main

// taskEnv names the task a process works for: stint exec sets it in its
// command's environment, and stint exec and stint leases request use it
// when no --task is given, so nested tools join the same task.
const taskEnv = "STINT_TASK"
