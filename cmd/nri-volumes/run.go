package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/containerd/nri/pkg/stub"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/nri-volumes/nri-volumes/config"
	"github.com/nri-volumes/nri-volumes/internal/metrics"
	"github.com/nri-volumes/nri-volumes/plugin"
)

// runOptions are the flags of `nri-volumes run`.
type runOptions struct {
	configPath     string
	socket         string
	name           string
	idx            string
	logLevel       string
	metricsAddress string
}

func defaultRunOptions() runOptions {
	return runOptions{socket: "/var/run/nri/nri.sock", name: "volumes", idx: "10", logLevel: "info"}
}

func newRunCommand(g *globalOptions) *cobra.Command {
	o := defaultRunOptions()
	cmd := &cobra.Command{
		Use:   "run [--config FILE] [--socket PATH] [--name NAME] [--idx NN] [--metrics-address ADDR]",
		Short: "Run the NRI plugin (the default when containerd launches it)",
		Long: `Run the NRI plugin: connect to containerd's NRI socket and give the containers it
creates their volumes. An external plugin reconnects when containerd restarts;
one that containerd launched from its plugin_path ends with the connection.`,
		Example: `  nri-volumes run --config /etc/nri-volumes/config.yaml
  nri-volumes run --log-level debug --metrics-address 127.0.0.1:9109`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("run takes no arguments, got %q", args)
			}
			return nil
		},
		RunE: func(*cobra.Command, []string) error {
			o.configPath, o.logLevel = g.configPath, g.logLevel
			return runPlugin(o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.socket, "socket", o.socket, "NRI socket to connect to")
	f.StringVar(&o.name, "name", o.name, "plugin name")
	f.StringVar(&o.idx, "idx", o.idx, "plugin index (two digits)")
	f.StringVar(&o.metricsAddress, "metrics-address", "", "serve Prometheus /metrics and /healthz on this address (off when empty; a port alone, :9109, is on 127.0.0.1 only)")
	return cmd
}

// launchedByRuntime tells whether containerd started us from its plugin_path:
// it then hands over a connected socket and the plugin name and index.
func launchedByRuntime() bool {
	return os.Getenv("NRI_PLUGIN_SOCKET") != "" || os.Getenv("NRI_PLUGIN_NAME") != ""
}

func runPlugin(opts runOptions) error {
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

	var handlers stub.Plugin = p
	stubOpts := []stub.Option{}
	if opts.metricsAddress != "" {
		if handlers, stubOpts, err = serveMetrics(ctx, log, p, opts.metricsAddress); err != nil {
			return err
		}
	}
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
		s, err := stub.New(handlers, stubOpts...)
		if err != nil {
			return fmt.Errorf("creating the NRI stub: %w", err)
		}
		return s.Run(ctx)
	}
	return runReconnecting(ctx, log, handlers, stubOpts)
}

// serveMetrics serves /metrics and /healthz on addr until ctx ends, and
// returns the plugin's handlers instrumented, with the stub option that
// tells the health check when the connection goes.
func serveMetrics(ctx context.Context, log *logrus.Logger, p *plugin.Plugin, addr string) (stub.Plugin, []stub.Option, error) {
	m := metrics.New(p.Store)
	bound, errc, err := m.Serve(ctx, addr)
	if err != nil {
		return nil, nil, fmt.Errorf("--metrics-address: %w", err)
	}
	go func() {
		if err := <-errc; err != nil {
			log.WithError(err).Error("metrics server stopped")
		}
	}()
	log.WithField("address", bound.String()).Info("serving /metrics and /healthz")
	return m.Instrument(p), []stub.Option{stub.WithOnClose(func() { m.SetConnected(false) })}, nil
}

// runReconnecting keeps an external plugin connected: when containerd
// restarts, the connection drops and the plugin dials again with backoff,
// then resynchronises.
func runReconnecting(ctx context.Context, log *logrus.Logger, p stub.Plugin, opts []stub.Option) error {
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
