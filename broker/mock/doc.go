// Package mock holds fn-field mocks of the broker service interfaces, for unit
// tests of the packages that consume them (web, cmd).
//
// Each mock has one exported func field per interface method, named after the
// method with an "Fn" suffix; the method calls that field. A test sets only the
// fields its scenario reaches: calling a method whose field is nil panics,
// which the test then reports as an unexpected call.
package mock
