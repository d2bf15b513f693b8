// Package config loads, defaults and validates vigil's YAML configuration,
// reporting every problem as FILE:LINE:COL: path.to.field: message, and
// computes the difference between two configurations for live reloads.
package config
