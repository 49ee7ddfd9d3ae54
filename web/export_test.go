package web

// PasswordChecks counts bcrypt comparisons of console logins, so that tests
// can show a throttled attempt costs none.
var PasswordChecks = &passwordChecks
