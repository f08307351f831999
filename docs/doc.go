// Package docs holds gavel's documentation. It has no code: its tests
// build the protocol report (docs/report.md, through scripts/report) and
// check the PDF: its four sections, at most five A4 pages, no text under
// 9 pt, and that every test the report cites exists.
package docs
