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
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nri-volumes/nri-volumes/internal/snapfs"
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
	copyUpLog   *copyUpCollector
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
		copyUpLog:   newCopyUpCollector(store),
		store:       store,
		pingTimeout: 2 * time.Second,
	}
	m.reg.MustRegister(m.requests, m.latency, m.copyUps, m.copyUpVols, m.lockWait, m.reconnects, m.connectedG,
		volumeCollector{store: store}, m.copyUpLog,
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
	if err := m.store().Stats().Ping(ctx); err != nil {
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
// server that stops on its own on errc. An addr without a host (":9109")
// listens on the loopback only: the metrics name every namespace's volumes
// and serve no authentication, and the plugin shares the node's network;
// serving beyond the node takes a host, such as 0.0.0.0:9109.
func (m *Metrics) Serve(ctx context.Context, addr string) (net.Addr, <-chan error, error) {
	ln, err := net.Listen("tcp", ListenAddress(addr))
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

// ListenAddress is the address Serve listens on for addr: addr itself, or
// the loopback when addr names a port only.
func ListenAddress(addr string) string {
	if host, port, err := net.SplitHostPort(addr); err == nil && host == "" {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return addr
}

// volumeCollector reports the volumes in the store at scrape time, by
// namespace and kind, and the limits and usage of sized volumes. The counts
// come from the store's memory (Stats.Namespaces), O(1) per namespace, never
// from reading every volume.json; only sized volumes are measured, which is
// O(1) each (statfs, the superblock or the qgroup), never a walk of a
// volume's data.
type volumeCollector struct {
	store func() *volumes.Store
}

var (
	volumesDesc = prometheus.NewDesc(namespace+"_volumes", "Volumes in the store, by namespace and kind (named or anonymous).",
		[]string{"namespace", "kind"}, nil)
	limitDesc = prometheus.NewDesc(namespace+"_volume_limit_bytes", "Sum of the sizes of the sized volumes of a namespace.",
		[]string{"namespace"}, nil)
	usedDesc = prometheus.NewDesc(namespace+"_volume_used_bytes", "Sum of the bytes used in the sized volumes of a namespace (unsized volumes are not measured).",
		[]string{"namespace"}, nil)
	nodeSizedDesc = prometheus.NewDesc(namespace+"_node_sized_bytes", "Sum of the sizes of every sized volume of the node, which reserve no space: compare with store_filesystem_bytes for the overcommit.",
		nil, nil)
	fsDesc = prometheus.NewDesc(namespace+"_store_filesystem_bytes", "Size of the file system that holds the volume store.",
		nil, nil)
	boundDesc = prometheus.NewDesc(namespace+"_node_sized_bound_bytes", "Bound on node_sized_bytes: limits.overcommit times store_filesystem_bytes (absent when limits.overcommit is 0).",
		nil, nil)
	snapshotsDesc = prometheus.NewDesc(namespace+"_snapshots", "Snapshots of the volumes of a namespace.",
		[]string{"namespace"}, nil)
	snapshotBytesDesc = prometheus.NewDesc(namespace+"_snapshot_bytes", "Bytes the snapshots of a namespace's volumes hold on disk (extents shared with their volumes included), which count against limits.namespaceBytes.",
		[]string{"namespace"}, nil)
)

func (c volumeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- volumesDesc
	ch <- limitDesc
	ch <- usedDesc
	ch <- nodeSizedDesc
	ch <- fsDesc
	ch <- boundDesc
	ch <- snapshotsDesc
	ch <- snapshotBytesDesc
}

func (c volumeCollector) Collect(ch chan<- prometheus.Metric) {
	store := c.store()
	counts, err := store.Stats().Namespaces()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(volumesDesc, err)
		return
	}
	for ns, n := range counts {
		for kind, k := range map[string]int{"named": n.Named, "anonymous": n.Anonymous} {
			if k > 0 {
				ch <- prometheus.MustNewConstMetric(volumesDesc, prometheus.GaugeValue, float64(k), ns, kind)
			}
		}
		if n.LimitBytes <= 0 {
			continue
		}
		var used int64
		for _, v := range n.Sized {
			// A volume removed since, or whose backend cannot tell,
			// adds nothing.
			if u, err := store.Size(&v); err == nil {
				used += u
			}
		}
		ch <- prometheus.MustNewConstMetric(limitDesc, prometheus.GaugeValue, float64(n.LimitBytes), ns)
		ch <- prometheus.MustNewConstMetric(usedDesc, prometheus.GaugeValue, float64(used), ns)
	}
	// From the ledger, which every snapshot's creation and removal
	// updates: O(namespaces), never a look at a snapshot.
	snaps, err := store.Snapshots().Sums()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(snapshotsDesc, err)
		return
	}
	for ns, sum := range snaps {
		ch <- prometheus.MustNewConstMetric(snapshotsDesc, prometheus.GaugeValue, float64(sum.Count), ns)
		ch <- prometheus.MustNewConstMetric(snapshotBytesDesc, prometheus.GaugeValue, float64(sum.Bytes), ns)
	}
	totals, err := store.Stats().Totals()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(nodeSizedDesc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(nodeSizedDesc, prometheus.GaugeValue, float64(totals.Sized.Bytes))
	ch <- prometheus.MustNewConstMetric(fsDesc, prometheus.GaugeValue, float64(totals.FileSystem))
	if totals.Bound > 0 {
		ch <- prometheus.MustNewConstMetric(boundDesc, prometheus.GaugeValue, float64(totals.Bound))
	}
}

// copyUpCollector reports the copy-ups of the OCI hook, which runs in
// processes of its own: at scrape time it reads what they recorded in the
// store since the last scrape into its counters.
type copyUpCollector struct {
	store func() *volumes.Store

	mu     sync.Mutex
	reader *volumes.CopyUpReader
	of     *volumes.Store // the store reader reads

	total    *prometheus.CounterVec
	failures *prometheus.CounterVec
	bytes    prometheus.Counter
	seconds  prometheus.Histogram
	// Snapshots and clones, recorded in the same log by the CLI and the
	// plugin (volumes.EventFreeze, volumes.EventClone).
	clones *prometheus.CounterVec
	freeze prometheus.Histogram
}

// Result label values of nri_volumes_copyups_total.
const (
	copyUpOK     = "ok"
	copyUpFailed = "failed"
)

func newCopyUpCollector(store func() *volumes.Store) *copyUpCollector {
	c := &copyUpCollector{
		store: store,
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "copyups_total",
			Help: "Copy-ups of image content into new volumes that the copy-up hook made, by result (ok or failed).",
		}, []string{"result"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "copyup_failures_total",
			Help: "Copy-ups that failed, by reason: limit (copyUpMaxSize, copyUpMaxFiles), pod-budget (copyUpMaxSizePerPod), no-space, other.",
		}, []string{"reason"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "copyup_bytes_total",
			Help: "Bytes of file content that successful copy-ups copied.",
		}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "copyup_duration_seconds",
			Help:    "Time one copy-up took, failed ones included; the container's start waits for it.",
			Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5, 10, 30, 60, 120},
		}),
		clones: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "clones_total",
			Help: "Clones made (volume clone, and cloneOf in pods), by how their data was copied: reflink (O(1)) or copy.",
		}, []string{"copy"}),
		freeze: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "freeze_duration_seconds",
			Help: "Time a volume's file system was frozen, its writers blocked, for a snapshot, a live clone or an export of a sized volume in use.",
			// A reflink takes milliseconds; a sparse copy of a big image, seconds.
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
	}
	for _, m := range []string{string(snapfs.Reflink), string(snapfs.SparseCopy)} {
		c.clones.WithLabelValues(m)
	}
	for _, r := range []string{copyUpOK, copyUpFailed} {
		c.total.WithLabelValues(r)
	}
	for _, r := range []string{volumes.CopyUpLimit, volumes.CopyUpPodBudget, volumes.CopyUpNoSpace, volumes.CopyUpOther} {
		c.failures.WithLabelValues(r)
	}
	c.catchUp() // copy-ups count from now on
	return c
}

// parts lists the metrics the log feeds, so Describe and Collect cannot
// disagree on them.
func (c *copyUpCollector) parts() []prometheus.Collector {
	return []prometheus.Collector{c.total, c.failures, c.bytes, c.seconds, c.clones, c.freeze}
}

func (c *copyUpCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, p := range c.parts() {
		p.Describe(ch)
	}
}

func (c *copyUpCollector) Collect(ch chan<- prometheus.Metric) {
	c.catchUp()
	for _, p := range c.parts() {
		p.Collect(ch)
	}
}

// catchUp counts the copy-ups recorded since it last ran. A store the
// plugin reopened is read from the moment it is first seen. The log is a
// side channel: if it cannot be read, the counters stay as they are rather
// than failing the whole scrape.
func (c *copyUpCollector) catchUp() {
	c.mu.Lock()
	defer c.mu.Unlock()
	store := c.store()
	if store == nil {
		return
	}
	if store != c.of {
		r, err := store.CopyUpLog().NewReader()
		if err != nil {
			return
		}
		c.reader, c.of = r, store
		return
	}
	_ = c.reader.Read(func(r volumes.CopyUpResult) {
		switch r.Event {
		case "":
		case volumes.EventFreeze:
			c.freeze.Observe(max(r.Frozen.Seconds(), 0))
			return
		case volumes.EventClone:
			m := string(snapfs.Reflink)
			if r.Copy != m {
				m = string(snapfs.SparseCopy) // a label value never comes from the file unchecked
			}
			c.clones.WithLabelValues(m).Inc()
			return
		default:
			return // of a later version
		}
		c.seconds.Observe(r.Duration.Seconds())
		if !r.OK() {
			reason := r.Reason
			switch reason {
			case volumes.CopyUpLimit, volumes.CopyUpPodBudget, volumes.CopyUpNoSpace:
			default:
				reason = volumes.CopyUpOther // a label value never comes from the file unchecked
			}
			c.total.WithLabelValues(copyUpFailed).Inc()
			c.failures.WithLabelValues(reason).Inc()
			return
		}
		c.total.WithLabelValues(copyUpOK).Inc()
		c.bytes.Add(float64(r.Bytes))
	})
}
