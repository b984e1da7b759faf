# The image the DaemonSet in examples/kubernetes runs. Static binaries (the
# plugin and its hook) on an empty base: the plugin needs no shell, but the
# init container's copy does, so the base is busybox.
FROM golang:1.26 AS build
WORKDIR /src
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/ ./cmd/nri-volumes ./cmd/nri-volumes-hook

FROM busybox:stable
COPY --from=build /out/nri-volumes /out/nri-volumes-hook /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/nri-volumes"]
