package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/containerd/nri/pkg/stub"
	"github.com/nri-volumes/nri-volumes/config"
	"github.com/nri-volumes/nri-volumes/plugin"
	"github.com/sirupsen/logrus"
)

// runOptions are the flags of `nri-volumes run`.
type runOptions struct {
	configPath string
	socket     string
	name       string
	idx        string
	logLevel   string
}

// launchedByRuntime tells whether containerd started us from its plugin_path:
// it then hands over a connected socket and the plugin name and index.
func launchedByRuntime() bool {
	return os.Getenv("NRI_PLUGIN_SOCKET") != "" || os.Getenv("NRI_PLUGIN_NAME") != ""
}

func runCommand(args []string) error {
	opts := runOptions{}
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.StringVar(&opts.configPath, "config", "", "configuration file (YAML)")
	fs.StringVar(&opts.socket, "socket", "/var/run/nri/nri.sock", "NRI socket to connect to")
	fs.StringVar(&opts.name, "name", "volumes", "plugin name")
	fs.StringVar(&opts.idx, "idx", "10", "plugin index (two digits)")
	fs.StringVar(&opts.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("run takes no arguments, got %q", fs.Args())
	}
	log := logrus.New()
	log.SetOutput(os.Stderr)
	log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: time.RFC3339Nano})
	level, err := logrus.ParseLevel(opts.logLevel)
	if err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log.SetLevel(level)

	cfg, err := config.Load(opts.configPath)
	if err != nil {
		return err
	}
	p, err := plugin.New(cfg, log)
	if err != nil {
		return err
	}
	defer p.Close()

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()

	stubOpts := []stub.Option{}
	if !launchedByRuntime() {
		stubOpts = append(stubOpts, stub.WithPluginName(opts.name), stub.WithPluginIdx(opts.idx), stub.WithSocketPath(opts.socket))
	}
	log.WithFields(logrus.Fields{
		"version": version, "commit": commit, "root": cfg.Root, "imageVolumes": cfg.ImageVolumes,
		"socket": opts.socket, "plugin": opts.idx + "-" + opts.name, "launchedByRuntime": launchedByRuntime(),
	}).Info("starting nri-volumes")

	if launchedByRuntime() {
		// containerd owns this connection: when it goes, so do we, and
		// containerd launches us again when it comes back.
		s, err := stub.New(p, stubOpts...)
		if err != nil {
			return fmt.Errorf("creating the NRI stub: %w", err)
		}
		return s.Run(ctx)
	}
	return runReconnecting(ctx, log, p, stubOpts)
}

// runReconnecting keeps an external plugin connected: when containerd
// restarts, the connection drops and the plugin dials again with backoff,
// then resynchronises.
func runReconnecting(ctx context.Context, log *logrus.Logger, p *plugin.Plugin, opts []stub.Option) error {
	const minBackoff, maxBackoff = 500 * time.Millisecond, 10 * time.Second
	backoff := minBackoff
	for attempt := 1; ; attempt++ {
		s, err := stub.New(p, opts...)
		if err != nil {
			return fmt.Errorf("creating the NRI stub: %w", err)
		}
		start := time.Now()
		err = s.Run(ctx)
		if ctx.Err() != nil {
			log.Info("stopping")
			return nil
		}
		if time.Since(start) > maxBackoff {
			backoff, attempt = minBackoff, 1
		}
		if err == nil {
			err = errors.New("connection closed")
		}
		log.WithFields(logrus.Fields{"attempt": attempt, "retryIn": backoff.String()}).WithError(err).Warn("NRI connection lost; reconnecting")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}
