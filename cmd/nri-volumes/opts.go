package main

import (
	"fmt"
	"strings"

	"github.com/nri-volumes/nri-volumes/config"
	"github.com/nri-volumes/nri-volumes/volumes"
)

// parseCreateOpts turns the --opt KEY=VALUE (-o) specs of `volume create`
// into the options of the new volume, as Docker's and Podman's -o do. An
// unknown key is an error that names it.
func parseCreateOpts(specs []string) (volumes.CreateOptions, error) {
	var opts volumes.CreateOptions
	seen := map[string]bool{}
	for _, spec := range specs {
		key, value, ok := strings.Cut(spec, "=")
		if !ok || key == "" {
			return opts, fmt.Errorf("--opt %q: %w: want KEY=VALUE", spec, volumes.ErrInvalid)
		}
		if seen[key] {
			return opts, fmt.Errorf("--opt %q: %w: %s given twice", spec, volumes.ErrInvalid, key)
		}
		seen[key] = true
		switch key {
		case "size":
			size, err := parseVolumeSize(value)
			if err != nil {
				return opts, fmt.Errorf("--opt %q: %w", spec, err)
			}
			opts.Size = size
		default:
			return opts, fmt.Errorf("--opt %q: %w: unknown option %q (known: size)", spec, volumes.ErrInvalid, key)
		}
	}
	return opts, nil
}

// parseVolumeSize parses a volume size such as 10Gi: positive, in the units
// of the configuration.
func parseVolumeSize(s string) (int64, error) {
	size, err := config.ParseSize(s)
	if err != nil {
		return 0, err
	}
	if size <= 0 {
		return 0, fmt.Errorf("%w: size %q must be positive", volumes.ErrInvalid, s)
	}
	return int64(size), nil
}
