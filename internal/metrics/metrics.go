// Package metrics serves what an operator watches of a running plugin:
// Prometheus metrics on /metrics and a liveness check on /healthz. It wraps
// the plugin's NRI handlers to count and time them, so the plugin itself
// knows nothing of metrics. Everything here is safe for concurrent use.
package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nri-volumes/nri-volumes/volumes"
)

const namespace = "nri_volumes"

// Result label values of nri_volumes_nri_requests_total.
const (
	resultOK    = "ok"
	resultError = "error"
)

// Metrics holds the plugin's metrics and its health.
type Metrics struct {
	reg *prometheus.Registry

	requests    *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	copyUps     prometheus.Counter
	copyUpVols  prometheus.Counter
	lockWait    prometheus.Histogram
	reconnects  prometheus.Counter
	connectedG  prometheus.Gauge
	connected   atomic.Bool
	registered  atomic.Bool // ever connected
	store       func() *volumes.Store
	pingTimeout time.Duration
}

// New makes the metrics. store returns the store in use (it may change when
// the runtime reconfigures the plugin); the volumes gauge and /healthz read it.
func New(store func() *volumes.Store) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "nri_requests_total",
			Help: "NRI requests handled, by event and result (ok or error).",
		}, []string{"event", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "nri_request_duration_seconds",
			Help: "Time spent handling an NRI request, by event. containerd's request timeout is 2s by default.",
			// From a no-op to containerd's default timeout and past it.
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2, 5},
		}, []string{"event"}),
		copyUps: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "copyup_hooks_total",
			Help: "Containers given the copy-up hook, which fills their new volumes from the image before they start.",
		}),
		copyUpVols: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "copyup_volumes_total",
			Help: "Volumes handed to the copy-up hook.",
		}),
		lockWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "store_lock_wait_seconds",
			Help:    "Time store operations of this process waited for the store lock (the CLI and hooks take it too).",
			Buckets: []float64{.0001, .001, .01, .1, .5, 1, 2, 5},
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "nri_reconnects_total",
			Help: "Times the plugin registered with containerd again after losing its NRI connection (a containerd restart).",
		}),
		connectedG: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "nri_connected",
			Help: "1 while the plugin is registered with containerd over NRI.",
		}),
		store:       store,
		pingTimeout: 2 * time.Second,
	}
	m.reg.MustRegister(m.requests, m.latency, m.copyUps, m.copyUpVols, m.lockWait, m.reconnects, m.connectedG,
		volumeCollector{store: store},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	volumes.ObserveLockWait(func(d time.Duration) { m.lockWait.Observe(d.Seconds()) })
	return m
}

// SetConnected records whether the plugin is registered with containerd; a
// registration after the first counts as a reconnect.
func (m *Metrics) SetConnected(ok bool) {
	m.connected.Store(ok)
	if !ok {
		m.connectedG.Set(0)
		return
	}
	m.connectedG.Set(1)
	if m.registered.Swap(true) {
		m.reconnects.Inc()
	}
}

// observe records one NRI request.
func (m *Metrics) observe(event string, start time.Time, err error) {
	result := resultOK
	if err != nil {
		result = resultError
	}
	m.requests.WithLabelValues(event, result).Inc()
	m.latency.WithLabelValues(event).Observe(time.Since(start).Seconds())
}

// Handler serves /metrics and /healthz.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}))
	mux.HandleFunc("/healthz", m.healthz)
	return mux
}

// healthz answers 200 only while the plugin is registered with containerd and
// its store is usable; a store lock wedged for longer than the probe's
// patience counts as unusable.
func (m *Metrics) healthz(w http.ResponseWriter, r *http.Request) {
	if !m.connected.Load() {
		http.Error(w, "not connected to containerd over NRI", http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), m.pingTimeout)
	defer cancel()
	if err := m.store().Ping(ctx); err != nil {
		msg := err.Error()
		if errors.Is(err, volumes.ErrBusy) {
			msg = "volume store lock not taken within " + m.pingTimeout.String()
		}
		http.Error(w, msg, http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// Serve listens on addr and serves Handler until ctx ends. It returns once
// listening, with the address bound (addr may ask for port 0), and reports a
// server that stops on its own on errc.
func (m *Metrics) Serve(ctx context.Context, addr string) (net.Addr, <-chan error, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	srv := &http.Server{Handler: m.Handler(), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() {
		err := srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		errc <- err
	}()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	return ln.Addr(), errc, nil
}

// volumeCollector reports the volumes in the store at scrape time, by
// namespace and kind. It lists the store's metadata, a read under the shared
// lock that does not measure data.
type volumeCollector struct {
	store func() *volumes.Store
}

var volumesDesc = prometheus.NewDesc(namespace+"_volumes", "Volumes in the store, by namespace and kind (named or anonymous).",
	[]string{"namespace", "kind"}, nil)

func (c volumeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- volumesDesc }

func (c volumeCollector) Collect(ch chan<- prometheus.Metric) {
	vols, err := c.store().List(volumes.ListOptions{AllNamespaces: true})
	if err != nil {
		ch <- prometheus.NewInvalidMetric(volumesDesc, err)
		return
	}
	type key struct{ ns, kind string }
	counts := map[key]int{}
	for _, v := range vols {
		kind := "named"
		if v.Anonymous {
			kind = "anonymous"
		}
		counts[key{v.Namespace, kind}]++
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(volumesDesc, prometheus.GaugeValue, float64(n), k.ns, k.kind)
	}
}
