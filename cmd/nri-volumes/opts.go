package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/nri-volumes/nri-volumes/config"
	"github.com/nri-volumes/nri-volumes/volumes"
)

// parseCreateOpts parses the --opt/-o KEY=VALUE options of volume create,
// as Docker's and Podman's -o do (`-o size=10Gi`, `-o uid=N -o gid=N`). A
// key given twice, an unknown key or a bad value is an error naming it.
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
		case "uid", "gid":
			id, err := strconv.ParseUint(value, 10, 32)
			if err != nil || id > 1<<32-2 {
				return opts, fmt.Errorf("--opt %q: %w: %s wants a number from 0 to %d", spec, volumes.ErrInvalid, key, uint32(1<<32-2))
			}
			n := int(id)
			if key == "uid" {
				opts.UID = &n
			} else {
				opts.GID = &n
			}
		case "mode":
			m, err := strconv.ParseUint(value, 8, 32)
			if err != nil || m > 0o7777 {
				return opts, fmt.Errorf("--opt %q: %w: mode wants an octal mode such as 0770", spec, volumes.ErrInvalid)
			}
			mode := uint32(m)
			opts.Mode = &mode
		case "size":
			size, err := parseVolumeSize(value)
			if err != nil {
				return opts, fmt.Errorf("--opt %q: %w", spec, err)
			}
			opts.Size = size
		case "inodes":
			// ext4's own bound; mkfs.ext4 -N takes it.
			n, err := strconv.ParseUint(value, 10, 32)
			if err != nil || n == 0 {
				return opts, fmt.Errorf("--opt %q: %w: inodes wants a number from 1 to %d", spec, volumes.ErrInvalid, uint32(1<<32-1))
			}
			opts.Inodes = int64(n)
		default:
			return opts, fmt.Errorf("--opt %q: %w: unknown option %q (known: size, inodes, uid, gid, mode)", spec, volumes.ErrInvalid, key)
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
